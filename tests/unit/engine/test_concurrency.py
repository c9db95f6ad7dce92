"""Workflow concurrency limits on the in-memory twins: the line, the cancel strategies, and
the reconciler's repairs of the slot state."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest

from orchestrator import Workflow, task
from orchestrator.engine.concurrency import waiting_detail
from orchestrator.engine.handle import RunHandle
from orchestrator.errors import ConcurrencyKeyError
from orchestrator.ops.slots import may_publish, repair_slots
from orchestrator.status import RunStatus
from orchestrator.stores.memory.slots import MemorySlots
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import CALLS, _called


@task
def tenant_step(start: int, tenant: str = "") -> int:
    _called()
    return start


def limited(name: str, on_limit: str = "queue", max_runs: int = 1) -> Workflow:
    cc = {"max_runs": max_runs, "key": "inputs.tenant", "on_limit": on_limit}
    return Workflow(name, concurrency=cc).step("a", tenant_step)


def start(engine: Engine, wf: Workflow, tenant: str, n: int = 1) -> RunHandle:
    return engine.start(wf, {"start": n, "tenant": tenant})


def started(engine: Engine, run: RunHandle) -> bool:
    record = engine.rt.history.get_run(run.id)
    return record is not None and record.published_at is not None


def detail(engine: Engine, wf: Workflow, run: RunHandle, tenant: str) -> str | None:
    return waiting_detail(engine.rt, wf.spec, run.id, {"tenant": tenant})


def test_runs_over_the_limit_wait_in_line_and_start_in_submit_order(engine: Engine) -> None:
    # Given a limit of one run per tenant, and three runs of one tenant and one of another
    wf = limited("cc_line")
    first, second, third = (start(engine, wf, "acme", n) for n in (1, 2, 3))
    other = start(engine, wf, "globex", 4)
    # Then the first of each tenant starts, the others wait pending, and say for what
    assert [started(engine, r) for r in (first, second, third, other)] == [1, 0, 0, 1]
    assert second.status() == third.status() == RunStatus.PENDING
    expected = "1 of 1 runs of 'cc_line' for key 'acme' running; 2nd in line"
    assert detail(engine, wf, third, "acme") == expected
    [step] = third.steps()
    assert (step.waiting_for, step.waiting_detail) == ("concurrency", expected)
    assert detail(engine, wf, first, "acme") is None
    # When every message is executed, the runs of acme ran one after the other, in order
    engine.worker.run(lambda: all(r.status().terminal for r in (first, second, third)), 10)
    order = [run_id for run_id, _, _ in CALLS if run_id != other.id]
    assert order == [first.id, second.id, third.id]
    assert [r.wait() for r in (first, second, third)] == [1, 2, 3]
    assert engine.rt.slots.line('["cc_line","acme"]') == ([], [])


def test_a_cancelled_run_leaves_the_line(engine: Engine) -> None:
    # Given a running run and two in line
    wf = limited("cc_cancel_line")
    first, second, third = (start(engine, wf, "acme", n) for n in (1, 2, 3))
    # When the first in line is cancelled, the next moves up, and starts when the slot frees
    assert second.cancel()
    assert detail(engine, wf, third, "acme") == (
        "1 of 1 runs of 'cc_cancel_line' for key 'acme' running; 1st in line"
    )
    engine.worker.run(lambda: third.status().terminal, 10)
    assert third.wait() == 3
    assert calls(second) == []
    assert second.status() == RunStatus.CANCELLED


def test_cancel_newest_cancels_the_run_over_the_limit(engine: Engine) -> None:
    wf = limited("cc_newest", "cancel_newest")
    first, second = start(engine, wf, "acme"), start(engine, wf, "acme")
    assert second.status() == RunStatus.CANCELLED
    assert "concurrency" in str(engine.rt.history.get_run(second.id).error)  # type: ignore[union-attr]
    engine.finish(first)
    assert first.status() == RunStatus.SUCCEEDED
    # a slot freed: the next run starts
    assert started(engine, start(engine, wf, "acme"))


def test_cancel_oldest_cancels_the_running_run_and_starts_the_new_one(engine: Engine) -> None:
    wf = limited("cc_oldest", "cancel_oldest")
    first, second = start(engine, wf, "acme", 1), start(engine, wf, "acme", 2)
    assert first.status() == RunStatus.CANCELLED
    assert started(engine, second)
    engine.finish(second)
    assert second.wait() == 2
    assert calls(first) == []


def test_a_key_that_does_not_evaluate_writes_nothing(engine: Engine) -> None:
    wf = limited("cc_key")
    with pytest.raises(ConcurrencyKeyError, match="cc_key.*inputs.tenant"):
        engine.start(wf, {"start": 1})
    assert engine.rt.history.list_runs(workflow="cc_key") == []


def test_the_reconciler_frees_the_slot_of_a_run_that_ended_without_freeing_it(
    engine: Engine,
) -> None:
    # Given a run that ended in history without its end freeing its slot (its process died)
    wf = limited("cc_leak")
    first, second = start(engine, wf, "acme", 1), start(engine, wf, "acme", 2)
    assert engine.rt.history.cancel_run(first.id, "ended elsewhere")
    assert not started(engine, second)
    # When the reconciler repairs the slots, it leaves a slot taken moments ago alone
    assert repair_slots(engine.rt) == 0
    assert not started(engine, second)
    # and frees it once it has been held past the recovery grace: the next run starts
    assert repair_slots(engine.rt, now=time.time() + 3600) == 1
    engine.worker.run(lambda: second.status().terminal, 10)
    assert second.wait() == 2


def test_lost_slot_state_is_rebuilt_from_history(engine: Engine) -> None:
    # Given a running run and one in line, then the slot store loses everything
    wf = limited("cc_lost")
    first, second = start(engine, wf, "acme", 1), start(engine, wf, "acme", 2)
    slots = cast(MemorySlots, engine.rt.slots)
    repair_slots(engine.rt)
    slots.forget()
    # When the reconciler repairs, the started run holds its slot again
    repair_slots(engine.rt)
    assert slots.line('["cc_lost","acme"]') == ([first.id], [])
    # and the run that was in line asks again: it waits, and is not published
    assert may_publish(engine.rt, second.id) is False
    assert slots.line('["cc_lost","acme"]') == ([first.id], [second.id])
    engine.worker.run(lambda: second.status().terminal, 10)
    assert [first.wait(), second.wait()] == [1, 2]


def test_a_third_tenant_is_not_held_up(engine: Engine) -> None:
    wf = limited("cc_two", max_runs=2)
    runs: list[Any] = [start(engine, wf, "acme", n) for n in range(3)]
    assert [started(engine, r) for r in runs] == [1, 1, 0]
    assert started(engine, start(engine, wf, "initech"))
