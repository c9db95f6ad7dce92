"""A step that fails: retried per its policy, or failed for good with its run."""

from __future__ import annotations

import time

from orchestrator.status import RunStatus, StepStatus
from tests.unit.engine.harness import Engine, calls, step_of
from tests.unit.engine.steps import RETRIED, UNENCODABLE


def test_a_failure_another_attempt_cannot_mend_fails_the_run_at_once(engine: Engine) -> None:
    # Given a step with retries whose result cannot be encoded, beside an independent step
    run = engine.start(UNENCODABLE, {"start": 1})
    # When the run goes on
    engine.finish(run)
    # Then the step failed at its first attempt with a dead letter, the run failed there, and
    # neither what follows it nor the independent step (delivered after) started
    assert calls(run) == [("a", 1)]
    record = run.record()
    assert (record.status, record.error_step) == (RunStatus.FAILED, "a")
    assert {s.step_id: (s.status, s.attempts) for s in run.steps()} == {
        "a": (StepStatus.FAILED, 1),
        "b": (StepStatus.SKIPPED, 0),
        "c": (StepStatus.SKIPPED, 0),
        "z": (StepStatus.SKIPPED, 0),
    }
    [letter] = engine.history.dead_letters()
    assert (letter.step_id, letter.reason) == ("a", "unencodable_result")
    assert "UnencodableResult" in (letter.error or "")


def test_a_failed_attempt_schedules_the_next_one_and_notes_it(engine: Engine) -> None:
    # Given a step retried 5 s after a failure
    run = engine.start(RETRIED, {"start": 1})
    # When its first attempt fails
    engine.take()["a"].execute()
    # Then the step is retrying, and its second attempt is noted and due in 5 s, not now
    a = engine.steps(run)["a"]
    assert (a.status, a.attempts) == (StepStatus.RETRYING, 1)
    noted = engine.state.expected_retry(run.id, "a", 2)
    assert noted is not None
    assert abs(noted["due"] - (time.time() + 5.0)) < 1.0
    assert noted["message"]["kwargs"]["orchestrator"]["attempt"] == 2
    assert engine.take() == {}
    # When it is delivered (the clock moves to it), its claim clears the note
    second = engine.worker.deliver()
    assert second is not None and step_of(second) == "a"
    assert second.kwargs["orchestrator"]["attempt"] == 2
    assert engine.state.expected_retry(run.id, "a", 2) is None


def test_a_step_that_exhausts_its_attempts_fails_for_good(engine: Engine) -> None:
    run = engine.start(RETRIED, {"start": 1})

    engine.finish(run)

    assert calls(run) == [("a", 1), ("a", 2), ("a", 3)]
    a = engine.steps(run)["a"]
    assert (a.status, a.attempts) == (StepStatus.FAILED, 3)
    assert [x.status for x in a.attempt_log] == [
        StepStatus.RETRYING,
        StepStatus.RETRYING,
        StepStatus.FAILED,
    ]
    assert a.attempt_log[2].error == "ConnectionError: attempt 3: connection refused"
    assert engine.steps(run)["b"].status == StepStatus.SKIPPED
    assert [(d.step_id, d.reason) for d in engine.history.dead_letters()] == [("a", "exhausted")]
