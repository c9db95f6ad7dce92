"""Pause, resume and cancel, as a step's delivery sees them."""

from __future__ import annotations

from orchestrator.status import RunStatus, StepStatus
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import CHAIN


def test_a_paused_run_parks_its_steps_until_resumed(engine: Engine) -> None:
    # Given a paused run
    run = engine.start(CHAIN, {"start": 1})
    run.pause()
    # When its first step is delivered, it waits, not run
    engine.take()["a"].execute()
    assert calls(run) == []
    assert run.status() == RunStatus.PAUSED
    assert engine.steps(run)["a"].status == StepStatus.PENDING
    # When the run is resumed, the parked step is published again and the run goes on
    run.resume()
    engine.finish(run)
    assert run.wait() == 3
    assert calls(run) == [("a", 1), ("b", 1), ("c", 1)]


def test_a_cancelled_run_starts_nothing_new(engine: Engine) -> None:
    # Given a run cancelled after its first step
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    assert run.cancel()
    # When the next step's message is delivered, it stands down
    engine.take()["b"].execute()
    assert calls(run) == [("a", 1)]
    assert run.status() == RunStatus.CANCELLED
    assert {s.step_id: s.status for s in run.steps()} == {
        "a": StepStatus.SUCCEEDED,
        "b": StepStatus.CANCELLED,
        "c": StepStatus.CANCELLED,
    }
