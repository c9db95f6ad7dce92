"""Recovering a run in place: what the reconciler does to a run it found stuck."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from orchestrator.client import get_run
from orchestrator.codec import encode
from orchestrator.engine.canvas import task_id
from orchestrator.ops.reconciler import Reconciler
from orchestrator.ops.recovery import end_if_ended, recover_run
from orchestrator.records import NewRun, NewStep, StepEvent
from orchestrator.status import RunStatus, StepStatus
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import CHAIN


def _died_running(engine: Engine, run_id: str, step: str) -> None:
    """A worker claimed ``step``, recorded it running, and died."""
    engine.state.claim(run_id, step, 1, "gone@host:1:x", 30_000, [])
    engine.rt.writer.submit(
        StepEvent(run_id, step, 1, StepStatus.RUNNING, datetime.now(UTC), worker="gone@host")
    )


def test_a_step_whose_worker_died_runs_again_once_its_lease_lapsed(engine: Engine) -> None:
    # Given a run whose second step's worker died while running it
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()  # b's message is lost with that worker
    _died_running(engine, run.id, "b")
    # While its lease is alive, the run is left alone
    assert recover_run(engine.rt, run.id, "stalled") is None
    # When the lease has lapsed, the rest of the run is planned again and published
    engine.state_clock.advance(31)
    assert recover_run(engine.rt, run.id, "a step's worker died") == 1
    engine.finish(run)
    # Then the step ran again, the first one did not, and the recovery is noted
    assert run.wait() == 3
    assert calls(run) == [("a", 1), ("b", 1), ("c", 1)]
    assert [kind for _, kind, _ in run.events()] == ["recovered"]


def test_a_step_whose_worker_died_after_noting_its_retry_runs_that_attempt(
    engine: Engine,
) -> None:
    # Given a step whose worker noted its next attempt in run state (attempt 2 is the current
    # one) and died before publishing it and before its history saw anything but "running"
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()
    _died_running(engine, run.id, "b")
    engine.state.expect_retry(run.id, "b", 2, {}, 0.0)
    engine.rt.writer.flush(timeout=5)
    # When its lease has lapsed and the run is recovered
    engine.state_clock.advance(31)
    assert recover_run(engine.rt, run.id, "a step's worker died") == 1
    engine.finish(run)
    # Then attempt 2 ran (a copy of attempt 1 is stale and would be ignored forever)
    assert run.wait() == 3
    assert calls(run) == [("a", 1), ("b", 2), ("c", 1)]


def test_a_success_only_run_state_saw_is_recorded_and_kept(engine: Engine) -> None:
    # Given a step whose result reached run state, but whose process died before its history
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()
    engine.state.finish_step(run.id, "b", encode(2), [], False, 1, "gone@host:1:x")
    # When the run is recovered
    assert recover_run(engine.rt, run.id, "stalled") == 1
    engine.finish(run)
    # Then the step is recorded as succeeded, is not run again, and what follows got its result
    assert run.wait() == 3
    assert calls(run) == [("a", 1), ("c", 1)]
    assert engine.steps(run)["b"].status == StepStatus.SUCCEEDED


def test_a_run_that_run_state_says_failed_is_ended_not_recovered(engine: Engine) -> None:
    # Given a run whose failure reached run state but not history (its writer died)
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.state.fail(run.id, "b", "ValueError: bad")
    # When it is recovered, it is ended instead
    assert recover_run(engine.rt, run.id, "stalled") is None
    record = run.record()
    assert (record.status, record.error_step, record.error) == (
        RunStatus.FAILED,
        "b",
        "ValueError: bad",
    )
    assert {s.step_id: s.status for s in run.steps()} == {
        "a": StepStatus.SUCCEEDED,
        "b": StepStatus.FAILED,
        "c": StepStatus.SKIPPED,
    }
    # and asking again changes nothing
    assert end_if_ended(engine.rt, run.id)
    assert run.record() == record


def test_a_run_recorded_but_never_published_is_published_by_the_reconciler(
    engine: Engine,
) -> None:
    # Given a run its submitter recorded, then died before publishing it
    spec, run_id = CHAIN.spec, str(uuid.uuid4())
    engine.history.create_run(
        NewRun(run_id, spec.name, spec.version, spec.model_dump(mode="json"), {"start": 5}, "api"),
        [NewStep(s.id, s.task, task_id(run_id, s.id)) for s in spec.steps],
    )
    # When a reconciler pass sees it a lease period later
    engine.history_ahead = timedelta(seconds=31)
    assert Reconciler(engine.rt).pass_once()["published"] == 1
    # Then it runs
    run = get_run(run_id, app=engine.app)
    engine.finish(run)
    assert run.wait() == 7


def test_a_run_whose_end_was_never_written_is_finished_by_the_reconciler(engine: Engine) -> None:
    # Given a run whose steps all succeeded, but whose end was lost with its writer
    run = engine.start(CHAIN, {"start": 1})
    engine.take()
    for step, value in (("a", 1), ("b", 2), ("c", 3)):
        engine.rt.writer.submit(
            StepEvent(run.id, step, 1, StepStatus.SUCCEEDED, datetime.now(UTC), result=value)
        )
    assert not run.status().terminal
    # When a reconciler pass sees it, it ends with the sink's result
    assert Reconciler(engine.rt).pass_once()["finished"] == 1
    assert run.wait() == 3
