"""A step that succeeds after its run ended (failed or cancelled while it ran): history keeps its
success, and a retry waits for it and inherits it, even before history knows, on the twins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from celery.worker.request import Request

from orchestrator import Workflow, task
from orchestrator.codec import encode
from orchestrator.engine.handle import RunHandle
from orchestrator.errors import InvalidTransition
from orchestrator.records import StepEvent
from orchestrator.status import RunStatus, StepStatus
from tests.unit.engine.harness import Engine
from tests.unit.engine.test_children import BILL_ONE, customers, first
from tests.unit.engine.test_for_each import CALLED, FIXED, listing, picky


@task
def refuse(records: list[dict[str, Any]]) -> None:
    raise ValueError(f"refused {len(records)} records")


def test_a_retry_waits_for_a_running_item_and_inherits_one_that_succeeded_late(
    engine: Engine,
) -> None:
    FIXED.clear()
    CALLED.clear()
    run = engine.start(
        Workflow("late_items").step("list", listing).step("p", picky, for_each="list"),
        {"count": 3},
    )
    engine.take()["list"].execute()
    engine.take()["p"].execute()  # the fan-out
    items = {r.kwargs["orchestrator"]["item"]: r for r in engine.worker.take()}
    # Given item 2 failed the run while items 0 and 1 ran, their events not yet in history:
    # item 0 still runs (holds its lease), item 1 succeeded (its result is in Redis)
    state = engine.rt.state
    state.renew({(run.id, "p[0]", 1): "host:1"}, 30_000)
    items[2].execute()
    state.finish_step(run.id, "p[1]", encode(1), [], False, 1, "host:2")
    assert run.status() == RunStatus.FAILED
    assert {s.step_id: s.status for s in run.steps()}["p[1]"] == StepStatus.SKIPPED

    # When the run is retried while item 0 runs, then once it died (its lease lapsed)
    with pytest.raises(InvalidTransition, match=r"still has steps running \(p\[0\]\)"):
        run.retry()
    state.release(run.id, "p[0]", 1, "host:1")
    FIXED.append(True)
    CALLED.clear()
    again = run.retry()
    engine.finish(again)

    # Then the retry ran items 0 and 2, and inherited item 1's late success
    assert again.wait() == [0, 1, 2]
    assert sorted(CALLED) == [0, 2]


def test_history_keeps_the_success_of_a_step_its_run_presumed_cancelled(engine: Engine) -> None:
    # Given a run cancelled before the events of its running step were written
    run = engine.start(Workflow("late_cancel").step("list", listing), {"count": 2})
    run.cancel()
    assert {s.step_id: s.status for s in run.steps()} == {"list": StepStatus.CANCELLED}

    # When the step's success arrives
    at = datetime.now(UTC)
    engine.rt.writer.submit(StepEvent(run.id, "list", 1, StepStatus.SUCCEEDED, at, result=[0, 1]))

    # Then history records it, and the run stays cancelled
    [step] = run.steps()
    assert (step.status, step.result) == (StepStatus.SUCCEEDED, [0, 1])
    assert run.status() == RunStatus.CANCELLED


def _parent_waiting_for_its_child(engine: Engine, name: str) -> tuple[RunHandle, Request]:
    """A run whose step ``kid`` waits for its child run, and its step ``boom``, not yet run,
    that fails the run."""
    _ = BILL_ONE.spec  # registered
    wf = (
        Workflow(name)
        .step("list", customers)
        .step("first", first, after="list")
        .step("kid", workflow="child_bill_one", after="first")
        .step("boom", refuse, after="list")
    )
    run = engine.start(wf, {"count": 1})
    engine.take()["list"].execute()
    ready = engine.take()  # first and boom
    ready["first"].execute()
    engine.take()["kid"].execute()  # starts the child run: its first step is queued
    return run, ready["boom"]


def test_a_failed_parent_whose_waiting_child_was_cancelled_can_be_retried_at_once(
    engine: Engine,
) -> None:
    # Given a parent whose step waits for its child run when another step fails the parent
    run, boom = _parent_waiting_for_its_child(engine, "late_child_parent")
    boom.execute()  # fails the parent, which cancels the child
    engine.worker.run(lambda: False, timeout=0.5)  # what follows: the parent step stands down

    # Then the waiting step is recorded cancelled, and the parent can be retried at once
    assert run.status() == RunStatus.FAILED
    assert run.children()[0].status() == RunStatus.CANCELLED
    assert engine.steps(run)["kid"].status == StepStatus.CANCELLED
    again = run.retry()
    assert engine.steps(again)["kid"].status == StepStatus.PENDING  # to run again


def test_a_child_that_succeeded_as_its_parent_failed_ends_the_waiting_step_succeeded(
    engine: Engine,
) -> None:
    run, boom = _parent_waiting_for_its_child(engine, "late_child_done")
    # Given the child run succeeded, and its parent failed before the child's end reached it
    engine.take()["bill"].execute()
    [child] = run.children()
    assert child.status() == RunStatus.SUCCEEDED
    ending = engine.take()  # the child's end, to the waiting step
    boom.execute()

    # When the child's end arrives
    for request in ending.values():
        request.execute()

    # Then the waiting step is recorded succeeded with the child's output, and a retry keeps it
    assert run.status() == RunStatus.FAILED
    kid = engine.steps(run)["kid"]
    assert (kid.status, kid.result) == (StepStatus.SUCCEEDED, {"customer": "c0", "billed": 0})
    again = run.retry()
    assert engine.steps(again)["kid"].status == StepStatus.SUCCEEDED
