"""Pause, resume, retry from failure and their history, on real workers."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from orchestrator import InvalidTransition, RunStatus, Workflow, WorkflowFailed, get_run
from orchestrator.cli import main
from tests.integration import workload
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration


def test_pause_holds_unstarted_steps_and_resume_releases_them(worker: Any) -> None:
    # Given a run whose first step runs while we pause it
    wf = Workflow("pausable")
    wf.step("first", workload.sleepy, kwargs={"seconds": 1.0})
    wf.step("second", workload.noop, after="first")
    wf.step("third", workload.noop, after="second")
    run = wf.run()
    eventually(lambda: any(s.status == "running" for s in run.steps()), what="a running step")
    # When it is paused
    assert run.pause() is True
    assert run.status() == RunStatus.PAUSED
    time.sleep(2.5)
    # Then the running step finished, and the next ones have not started
    statuses = {s.step_id: s.status for s in run.steps()}
    assert statuses == {"first": "succeeded", "second": "pending", "third": "pending"}
    with pytest.raises(InvalidTransition, match="only a pending or running run can be paused"):
        run.pause()
    # When it is resumed, the rest runs to the end
    assert main(["resume", run.id]) == 0
    assert run.wait(timeout=30) is None
    assert [kind for _, kind, _ in run.events()] == ["paused", "resumed"]
    assert "1 waiting steps published" in run.events()[1][2]


def test_cancel_reaches_parked_steps_of_a_paused_run(worker: Any) -> None:
    wf = Workflow("pause-cancel")
    wf.step("first", workload.sleepy, kwargs={"seconds": 0.5})
    wf.step("second", workload.noop, after="first")
    run = wf.run()
    run.pause()
    time.sleep(1.5)
    assert run.cancel() is True
    with pytest.raises(WorkflowFailed, match="cancelled"):
        run.wait(timeout=10)
    assert {s.step_id: s.status for s in run.steps()}["second"] == "cancelled"


def test_retry_from_failure_keeps_succeeded_outputs(worker: Any) -> None:
    # Given a run whose third step fails after two steps succeeded
    key = uuid.uuid4().hex[:8]
    workload.set_down(key, True)
    wf = Workflow("retryable")
    wf.step("a", workload.add)
    wf.step("b", workload.double, after="a")
    wf.step("c", workload.switch, after="b", kwargs={"key": key})
    wf.step("d", workload.noop, after="c")
    first = wf.run({"x": 2, "y": 3})
    with pytest.raises(WorkflowFailed, match="switched off"):
        first.wait(timeout=30)
    # When the cause is fixed and the run is retried from the CLI
    workload.set_down(key, False)
    assert main(["retry", first.id]) == 0
    retried = get_run(next(d for _, k, d in first.events() if k == "retried").split()[-1])
    # Then only the failed and never-run steps execute; the others keep their outputs
    assert retried.wait(timeout=30) is None
    record = retried.record()
    assert record.parent_run_id == first.id and record.trigger == "retry"
    steps = {s.step_id: s for s in retried.steps()}
    assert steps["a"].attempts == 0 and steps["a"].result == 5
    assert steps["b"].attempts == 0 and steps["b"].result == 10
    assert steps["c"].attempts == 1 and steps["c"].result == f"{key} ok"
    assert [c["attempt"] for c in workload.calls(key)] == [1, 1]
    with pytest.raises(InvalidTransition, match="only failed or cancelled"):
        retried.retry()
