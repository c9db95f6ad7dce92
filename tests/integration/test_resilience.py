"""Retries, circuit breakers, dead letters and timeouts on real workers, Redis and PostgreSQL."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import Workflow, WorkflowFailed
from orchestrator.app import default_services
from tests.integration import workload
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration


def _key() -> str:
    return uuid.uuid4().hex[:8]


def _gaps(run: Any, step: str) -> list[float]:
    log = next(s for s in run.steps() if s.step_id == step).attempt_log
    return [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(log)]


def test_backoff_gaps_follow_the_policy_without_jitter(worker: Any) -> None:
    # Given a step that fails twice with a retried error (base 1 s, backoff 2, no jitter)
    key = _key()
    run = Workflow("retry-gaps").step("s", workload.flaky, kwargs={"key": key}).run()
    # When it runs
    assert run.wait(timeout=30) == 3
    # Then there were three attempts, 1 s and 2 s apart (within 10%), each recorded
    step = run.steps()[0]
    assert step.attempts == 3 and [a.status for a in step.attempt_log] == [
        "retrying",
        "retrying",
        "succeeded",
    ]
    assert all("ConnectionError" in (a.error or "") for a in step.attempt_log[:2])
    for gap, expected in zip(_gaps(run, "s"), [1.0, 2.0], strict=True):
        assert expected * 0.9 <= gap <= expected * 1.1 + 0.1, _gaps(run, "s")


def test_jittered_gaps_stay_within_the_cap(worker: Any) -> None:
    # Given the same step with full jitter from the YAML-style per-step override
    key = _key()
    wf = Workflow("retry-jitter").step(
        "s",
        workload.flaky,
        kwargs={"key": key},
        retry={"max_attempts": 4, "base_delay": 1.0, "backoff": 2.0, "jitter": True},
    )
    run = wf.run()
    assert run.wait(timeout=30) == 3
    # Then each wait is between 0 and its cap
    gaps = _gaps(run, "s")
    assert len(gaps) == 2
    for gap, cap in zip(gaps, [1.0, 2.0], strict=True):
        assert 0 <= gap <= cap + 0.3


def test_error_not_in_retry_on_fails_after_one_attempt(worker: Any) -> None:
    key = _key()
    run = Workflow("retry-picky").step("s", workload.picky, kwargs={"key": key}).run()
    with pytest.raises(WorkflowFailed, match="not retryable"):
        run.wait(timeout=30)
    assert len(workload.calls(key)) == 1
    assert run.steps()[0].attempts == 1


def test_breaker_is_shared_by_two_worker_processes(start_worker: Callable[..., Any]) -> None:
    # Given two separate worker processes consuming the breaker's queue
    for name in ("cb-a", "cb-b"):
        start_worker(name, concurrency=1, args=("-Q", "cb"))
    default_services().breakers.reset("test-breaker")
    key = _key()
    workload.set_down(key, True)
    wf = Workflow("breaker").step("s", workload.guarded, kwargs={"key": key}, queue="cb")
    # When three calls fail (across both workers), the breaker opens
    failed = [wf.run() for _ in range(3)]
    for run in failed:
        with pytest.raises(WorkflowFailed):
            run.wait(timeout=30)
    assert default_services().breakers.get("test-breaker").state == "open"
    assert len({c["pid"] for c in workload.calls(key)}) == 2
    # and further runs are deferred: no call reaches the function while it is open
    deferred = [wf.run() for _ in range(4)]
    time.sleep(1.0)
    assert len(workload.calls(key)) == 3
    assert all(r.status() != "failed" for r in deferred)
    # When the downstream recovers, after reset_timeout exactly one trial goes through
    workload.set_down(key, False)
    for run in deferred:
        assert run.wait(timeout=30) == "ok"
    later = workload.calls(key)[3:]
    trial, rest = later[0], later[1:]
    assert trial["ok"] and all(c["start"] >= trial["end"] for c in rest)
    assert trial["start"] >= workload.calls(key)[2]["end"] + 2.0 - 0.1
    # Then the breaker is closed again and every deferred step ran once with one attempt
    assert default_services().breakers.get("test-breaker").state == "closed"
    assert len(later) == 4 and all(r.steps()[0].attempts == 1 for r in deferred)


def test_long_retry_delay_beyond_visibility_timeout_runs_once(
    start_worker: Callable[..., Any],
) -> None:
    # Given a worker whose Redis visibility timeout is 4 s, and a retry delay of 5 s
    start_worker("vis", args=("-Q", "vis"), env={"ORCHESTRATOR_VISIBILITY_TIMEOUT": "4"})
    key = _key()
    wf = Workflow("long-delay").step(
        "s",
        workload.flaky,
        kwargs={"key": key, "succeed_on": 2},
        queue="vis",
        retry={"max_attempts": 2, "base_delay": 5.0, "jitter": False},
    )
    run = wf.run()
    # When it runs, the second attempt comes after the delay, kept durably in Redis
    assert run.wait(timeout=40) == 2
    time.sleep(5.0)
    # Then the step ran exactly twice: no redelivered duplicate
    attempts = [c["attempt"] for c in workload.calls(key)]
    assert attempts == [1, 2]
    assert _gaps(run, "s")[0] >= 4.5


def test_soft_timeout_is_recorded_and_fails_the_step(worker: Any) -> None:
    run = Workflow("soft").step("s", workload.sleepy, kwargs={"seconds": 3}, soft_timeout=0.5).run()
    with pytest.raises(WorkflowFailed, match="SoftTimeLimitExceeded"):
        run.wait(timeout=30)
    assert run.steps()[0].attempt_log[0].status == "failed"


def test_hard_timeout_kills_the_attempt_and_fails_the_run(worker: Any) -> None:
    run = (
        Workflow("hard")
        .step("s", workload.stubborn, kwargs={"seconds": 5}, timeout=1.0, soft_timeout=0.5)
        .run()
    )
    with pytest.raises(WorkflowFailed, match="TimeLimitExceeded"):
        run.wait(timeout=30)
    step = run.steps()[0]
    assert step.status == "failed" and "hard time limit" in step.error


def test_run_deadline_fails_the_run_and_cancels_what_has_not_started(worker: Any) -> None:
    wf = Workflow("deadline", deadline=1.0)
    wf.step("slow", workload.sleepy, kwargs={"seconds": 2.5})
    wf.step("next", workload.noop, after="slow")
    run = wf.run()
    with pytest.raises(WorkflowFailed, match="deadline exceeded"):
        run.wait(timeout=30)
    time.sleep(2.5)
    statuses = {s.step_id: s.status for s in run.steps()}
    assert statuses["next"] == "cancelled"
    assert run.status() == "failed"


def test_dead_letter_replayed_to_success(worker: Any) -> None:
    from orchestrator.cli import main

    # Given a step that fails for good
    key = _key()
    workload.set_down(key, True)
    wf = (
        Workflow("dlq")
        .step("first", workload.noop)
        .step("s", workload.switch, after="first", kwargs={"key": key})
    )
    run = wf.run()
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)
    letter = eventually(
        lambda: [d for d in default_services().history.dead_letters() if str(d.run_id) == run.id]
    )[0]
    assert letter.step_id == "s" and letter.reason == "exhausted"
    assert "switched off" in letter.error and letter.kwargs == {"key": key}
    # When the cause is fixed and the dead letter is replayed
    workload.set_down(key, False)
    assert main(["dlq", "replay", str(letter.id)]) == 0
    # Then a retry of the run succeeds, without running the step that had succeeded
    retried = eventually(lambda: [r for r in _runs("dlq") if r.parent_run_id == run.id])[0]
    from orchestrator import get_run

    assert get_run(retried.id).wait(timeout=30) == f"{key} ok"
    steps = {s.step_id: s for s in get_run(retried.id).steps()}
    assert steps["first"].attempts == 0 and steps["s"].attempts == 1
    assert default_services().history.dead_letter(letter.id).replayed_at is not None


def test_message_for_unregistered_task_becomes_a_dead_letter(worker: Any) -> None:
    task_id = str(uuid.uuid4())
    default_services().app.send_task("tasks.not_registered", args=[1, 2], task_id=task_id)
    letter = eventually(
        lambda: [
            d for d in default_services().history.dead_letters() if d.celery_task_id == task_id
        ]
    )[0]
    assert letter.reason == "unregistered" and letter.args == [1, 2]
    assert "ORCHESTRATOR_TASK_MODULES" in letter.error


def _runs(workflow: str) -> list[Any]:
    from orchestrator import list_runs

    return list_runs(workflow=workflow)
