"""``orchestrator.testing.run_inline``: a workflow run in this process, on in-memory twins."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import signals

from orchestrator import Workflow, circuit_breaker, current_run, retry, task
from orchestrator.errors import InputError, UnknownTaskError, WorkflowFailed
from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(task_modules=["tasks"], workflows_path=str(ROOT / "config" / "workflows"))


@task
@retry(max_attempts=3, base_delay=30.0, jitter=False, on=ConnectionError)
def flaky(fails: int) -> str:
    if current_run.attempt <= fails:
        raise ConnectionError(f"attempt {current_run.attempt} refused")
    return f"done at attempt {current_run.attempt}"


@task
def shout(text: str) -> str:
    return text.upper()


@task
def broken(value: int) -> int:
    raise ValueError(f"cannot use {value}")


@task
def number(start: int) -> int:
    return start


@task
def add(value: int, amount: int = 1) -> int:
    return value + amount


@task
def total(parents: dict[str, int]) -> dict[str, Any]:
    return {"sum": sum(parents.values()), "from": sorted(parents)}


@task
@retry(max_attempts=2, base_delay=1.0, jitter=False)
@circuit_breaker("inline-warehouse", failure_threshold=1, reset_timeout=600.0)
def warehouse(start: int) -> str:
    if current_run.attempt == 1:
        raise ConnectionError("warehouse down")
    return "loaded"


RETRYING = Workflow("inline_retrying").step("fetch", flaky).step("show", shout, after="fetch")
FAILING = (
    Workflow("inline_failing")
    .step("first", broken)
    .step("second", add, after="first")
    .step("third", add, after="second")
)
DIAMOND = (
    Workflow("inline_diamond")
    .step("a", number)
    .step("b", add, after="a", kwargs={"amount": 10})
    .step("c", add, after="a", kwargs={"amount": 100})
    .step("d", total, after=["b", "c"])
)
GUARDED = Workflow("inline_guarded").step("load", warehouse)
LATE = Workflow("inline_late", deadline=60.0).step("fetch", flaky)
UNKNOWN = Workflow("inline_unknown").step("a", "tests.unit.test_inline.nowhere")


def step_of(run: Any, step_id: str) -> Any:
    return next(s for s in run.steps() if s.step_id == step_id)


def test_the_example_etl_gives_its_report() -> None:
    # Given the example ETL of config/workflows/etl.yaml and what its steps make of the source
    from tasks import etl

    rows = etl.extract.run("s3://bucket/day")
    kept = etl.clean.run(rows)
    # When it runs inline
    run = run_inline("etl", {"source": "s3://bucket/day"}, settings=SETTINGS)
    # Then every step succeeded at its first attempt, and the report is the run's output
    assert run.status() == RunStatus.SUCCEEDED
    assert run.wait() == f"loaded {len(kept)} of {len(rows)} rows into facts; ids unique: True"
    assert {s.step_id: (s.status, s.attempts) for s in run.steps()} == dict.fromkeys(
        ["extract", "clean", "stats", "validate", "load", "report"], (StepStatus.SUCCEEDED, 1)
    )
    assert step_of(run, "load").result == {
        "table": "facts",
        "loaded": len(kept),
        "raw_rows": len(rows),
        "run_id": run.id,
    }


def test_a_retried_step_shows_its_attempts_without_waiting_for_its_delays() -> None:
    # Given a step that fails twice, retried after 30 s and then 60 s
    started = time.monotonic()
    # When it runs inline
    run = run_inline(RETRYING, {"fails": 2}, settings=SETTINGS)
    # Then it succeeded at its third attempt, every attempt is recorded, and nothing waited
    assert run.wait() == "DONE AT ATTEMPT 3"
    fetch = step_of(run, "fetch")
    assert (fetch.status, fetch.attempts) == (StepStatus.SUCCEEDED, 3)
    assert [(a.attempt, a.status, a.error) for a in fetch.attempt_log] == [
        (1, StepStatus.RETRYING, "ConnectionError: attempt 1 refused"),
        (2, StepStatus.RETRYING, "ConnectionError: attempt 2 refused"),
        (3, StepStatus.SUCCEEDED, None),
    ]
    assert time.monotonic() - started < 5


def test_a_step_that_exhausts_its_attempts_fails_the_run() -> None:
    run = run_inline(RETRYING, {"fails": 5}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    fetch = step_of(run, "fetch")
    assert (fetch.status, fetch.attempts) == (StepStatus.FAILED, 3)
    assert [a.status for a in fetch.attempt_log][-1] == StepStatus.FAILED
    assert step_of(run, "show").status == StepStatus.SKIPPED


def test_a_failing_workflow_fails_and_wait_raises_workflow_failed() -> None:
    # When a workflow whose first step raises runs inline
    run = run_inline(FAILING, {"value": 7}, settings=SETTINGS)
    # Then the run failed at that step, what depends on it was skipped, and wait() says why
    assert run.status() == RunStatus.FAILED
    assert {s.step_id: s.status for s in run.steps()} == {
        "first": StepStatus.FAILED,
        "second": StepStatus.SKIPPED,
        "third": StepStatus.SKIPPED,
    }
    with pytest.raises(WorkflowFailed) as failed:
        run.wait()
    assert failed.value.step == "first"
    assert "ValueError: cannot use 7" in str(failed.value)


def test_a_diamond_joins_both_branches() -> None:
    run = run_inline(DIAMOND, {"start": 1}, settings=SETTINGS)

    assert run.wait() == {"sum": 11 + 101, "from": ["b", "c"]}
    assert [s.status for s in run.steps()] == [StepStatus.SUCCEEDED] * 4


def test_a_step_deferred_by_an_open_breaker_does_not_wait_for_it() -> None:
    # Given a step whose first failure opens its breaker for 10 minutes
    started = time.monotonic()
    # When it runs inline
    run = run_inline(GUARDED, {"start": 1}, settings=SETTINGS)
    # Then its retry waited for the breaker to half-open (no attempt used) and succeeded at once
    assert run.wait() == "loaded"
    load = step_of(run, "load")
    assert [(a.attempt, a.status) for a in load.attempt_log] == [
        (1, StepStatus.RETRYING),
        (2, StepStatus.SUCCEEDED),
    ]
    assert time.monotonic() - started < 5


def test_skipped_waits_keep_their_order_a_deadline_passes_between_retries() -> None:
    # Given a run with a 60 s deadline whose step is retried after 30 s, then 60 s more
    run = run_inline(LATE, {"fails": 5}, settings=SETTINGS)
    # Then the deadline struck before the third attempt
    record = run.record()
    assert (record.status, record.error) == (RunStatus.FAILED, "deadline exceeded (60s)")
    assert [a.attempt for a in step_of(run, "fetch").attempt_log] == [1, 2]


def test_no_worker_signal_is_sent() -> None:
    # Given receivers of the signals orchestrator.worker connects to
    sent: list[str] = []
    watched = [signals.worker_init, signals.worker_ready, signals.worker_process_init]
    watched += [signals.worker_shutdown, signals.after_setup_logger, signals.task_unknown]
    receivers = [lambda signal=signal, **_: sent.append(signal.name) for signal in watched]
    for signal, receiver in zip(watched, receivers, strict=True):
        signal.connect(receiver, weak=False)
    try:
        # When a workflow runs inline
        run_inline(DIAMOND, {"start": 1}, settings=SETTINGS)
    finally:
        for signal, receiver in zip(watched, receivers, strict=True):
            signal.disconnect(receiver)
    # Then none was sent (no reconciler, delay pump or metrics server starts here)
    assert sent == []


def test_inputs_a_root_step_cannot_take_are_refused_before_anything_runs() -> None:
    with pytest.raises(InputError, match="inline_diamond"):
        run_inline(DIAMOND, {"begin": 1}, settings=SETTINGS)


def test_an_unknown_task_is_refused_before_anything_runs() -> None:
    with pytest.raises(UnknownTaskError, match="nowhere"):
        run_inline(UNKNOWN, settings=SETTINGS)
