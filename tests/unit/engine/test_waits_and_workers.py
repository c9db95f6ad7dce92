"""What a step waits for (``StepRun.waiting_for``, ``run.pending()``) on the in-memory twins,
for each built-in reason and a probe a feature adds; and the registry of workers: live, lost
after three missed heartbeats, dropped later."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orchestrator import Workflow, circuit_breaker, task
from orchestrator.core.breaker import BreakerState
from orchestrator.engine.waiting import (
    ORDER_WAIT_STEPS,
    Waiting,
    WaitQuery,
    add_probe,
    remove_probe,
)
from orchestrator.records import DROPPED_AFTER, LOST_AFTER, WorkerInfo
from orchestrator.status import StepStatus
from orchestrator.stores.memory.workers import MemoryWorkers
from tests.unit.engine.harness import Engine, ManualClock
from tests.unit.engine.steps import CHAIN, RETRIED, inc, source


@task
@circuit_breaker("unit-waits", failure_threshold=1, reset_timeout=30.0)
def guarded(start: int) -> int:
    return start


@task
def as_inputs(start: int) -> dict[str, int]:
    return {"start": start}


BROKEN = Workflow("unit_waits_breaker").step("a", guarded).step("b", inc, after="a")
CHILD = Workflow("unit_waits_child").step("c1", source)
PARENT = Workflow("unit_waits_parent").step("a", as_inputs).step("kid", workflow=CHILD, after="a")


def worker(name: str = "w1@host", queues: tuple[str, ...] = ("celery",)) -> WorkerInfo:
    tasks = (source.name, inc.name, guarded.name)
    return WorkerInfo(name, queues, tasks, 2, 123, 0.0, 0.0, running=(("r", "s"),))


def test_a_paused_run_says_its_ready_step_waits_to_be_resumed(engine: Engine) -> None:
    run = engine.start(CHAIN, {"start": 1})
    run.pause()

    waits = {s.step_id: s for s in run.pending()}

    assert waits["a"].waiting_for == "paused"
    assert f"orchestrator resume {run.id}" in (waits["a"].waiting_detail or "")
    assert waits["b"].waiting_for is None  # it waits for a, which has not ended


def test_a_ready_step_with_no_worker_waits_for_the_queue_and_says_none_runs(
    engine: Engine,
) -> None:
    run = engine.start(CHAIN, {"start": 1})

    [first, *_] = run.pending()

    assert first.step_id == "a" and first.waiting_for == "queue"
    assert "no worker is running" in (first.waiting_detail or "")
    engine.rt.workers.publish(worker(queues=("other",)), DROPPED_AFTER)
    assert "no live worker consumes this queue" in (run.pending()[0].waiting_detail or "")
    engine.rt.workers.publish(worker(), DROPPED_AFTER)
    assert (
        run.pending()[0].waiting_detail == f"task {source.name!r} on queue 'celery', for a worker"
    )


def test_a_retrying_step_waits_for_its_retry_delay(engine: Engine) -> None:
    run = engine.start(RETRIED, {"start": 1})
    engine.take()["a"].execute()  # fails; its next attempt is due in 5 s

    [a] = [s for s in run.steps() if s.step_id == "a"]

    assert a.status == StepStatus.RETRYING
    assert a.waiting_for == "retry_delay"
    assert (a.waiting_detail or "").startswith("attempt 2 at ")
    assert "connection refused" in (a.waiting_detail or "")


def test_a_step_behind_an_open_breaker_waits_for_it(engine: Engine) -> None:
    engine.breakers.states["unit-waits"] = BreakerState(state="open", opened_at=engine.clock())
    run = engine.start(BROKEN, {"start": 1})

    [a] = [s for s in run.pending() if s.step_id == "a"]

    assert a.waiting_for == "breaker"
    assert (a.waiting_detail or "").startswith("breaker 'unit-waits' open until ")


def test_a_step_whose_child_run_is_going_waits_for_it_and_names_it(engine: Engine) -> None:
    _ = CHILD.spec
    run = engine.start(PARENT, {"start": 1})
    engine.take()["a"].execute()
    engine.take()["kid"].execute()  # starts the child run and holds no worker
    [child] = run.children()

    [kid] = [s for s in run.pending() if s.step_id == "kid"]

    assert kid.status == StepStatus.RUNNING
    assert kid.waiting_for == "child_run"
    assert child.id in (kid.waiting_detail or "")
    engine.finish(run)
    assert run.wait() == 1 and run.pending() == []


def test_a_feature_adds_its_reason_with_a_probe(engine: Engine) -> None:
    def napping(q: WaitQuery) -> Waiting | None:
        if q.step.step_id != "a":
            return None
        return Waiting(q.step.step_id, "sleep", "asleep until 12:00:00")

    add_probe("unit_sleep", napping, ORDER_WAIT_STEPS)
    try:
        run = engine.start(CHAIN, {"start": 1})
        assert run.pending()[0].waiting_for == "sleep"
    finally:
        remove_probe("unit_sleep")
    assert run.pending()[0].waiting_for == "queue"


def test_an_ended_run_has_nothing_pending(engine: Engine) -> None:
    run = engine.start(CHAIN, {"start": 1})
    engine.finish(run)

    assert run.pending() == []
    assert all(s.waiting_for is None for s in run.steps())


@pytest.fixture
def clock() -> Iterator[ManualClock]:
    yield ManualClock()


def test_a_silent_worker_is_lost_after_three_missed_heartbeats_then_dropped(
    clock: ManualClock,
) -> None:
    registry = MemoryWorkers(clock)
    registry.publish(worker("a@h"), DROPPED_AFTER)
    registry.publish(worker("b@h"), DROPPED_AFTER)

    clock.advance(LOST_AFTER + 1)
    registry.publish(worker("b@h"), DROPPED_AFTER)  # b beats, a is silent
    listed = {w.name: w for w in registry.workers(LOST_AFTER)}

    assert listed["a@h"].state == "lost" and listed["a@h"].silent_for == LOST_AFTER + 1
    assert listed["b@h"].state == "live" and listed["b@h"].running == (("r", "s"),)
    assert listed["b@h"].host == "h"
    clock.advance(DROPPED_AFTER)
    registry.publish(worker("b@h"), DROPPED_AFTER)
    assert [w.name for w in registry.workers(LOST_AFTER)] == ["b@h"]
    registry.remove("b@h")
    assert registry.workers(LOST_AFTER) == []
