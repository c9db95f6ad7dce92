"""The core engine end to end: real Redis, PostgreSQL and `celery worker` processes."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from orchestrator import (
    RunNotFound,
    RunStatus,
    Workflow,
    WorkflowFailed,
    get_run,
    list_runs,
    run_workflow,
)
from tests.integration import workload
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration


def _settle(run: Any, timeout: float = 20.0) -> dict[str, str]:
    """Step statuses once every step is terminal (running siblings of a failure finish)."""
    terminal = ("succeeded", "failed", "skipped", "cancelled")

    def settled() -> dict[str, str] | None:
        statuses = {s.step_id: s.status for s in run.steps()}
        return statuses if all(s in terminal for s in statuses.values()) else None

    return eventually(settled, timeout, "every step to be terminal")


def test_example_etl_yaml_workflow_runs_by_name(worker: Any) -> None:
    # Given the example ETL workflow from config/workflows/etl.yaml
    # When it is run by name
    run = run_workflow("etl", {"source": "s3://bucket/day"})
    output = run.wait(timeout=60)
    # Then every step succeeded once, data flowed through the fan-out and fan-in
    assert output.startswith("loaded ") and "ids unique: True" in output
    steps = {s.step_id: s for s in run.steps()}
    assert set(steps) == {"extract", "clean", "stats", "validate", "load", "report"}
    assert all(s.status == "succeeded" and s.attempts == 1 for s in steps.values())
    assert steps["load"].result["table"] == "facts"
    assert steps["load"].result["run_id"] == run.id
    assert steps["load"].started_at >= max(steps["clean"].finished_at, steps["stats"].finished_at)
    record = run.record()
    assert record.status == "succeeded" and record.trigger == "api"
    assert record.started_at <= record.finished_at


def test_diamond_passes_data_between_steps(worker: Any) -> None:
    # Given a diamond: add -> (double, triple) -> total
    wf = Workflow("diamond")
    wf.step("add", workload.add)
    wf.step("double", workload.double, after="add")
    wf.step("triple", "tests.integration.workload.triple", after="add")
    wf.step("total", workload.total, after=["double", "triple"])
    # When it runs with x=1, y=2
    output = wf.run({"x": 1, "y": 2}).wait(timeout=30)
    # Then the single-parent steps got add's result and total got a dict of both parents
    assert output == {"sum": 6 + 9, "parents": ["double", "triple"]}


def test_n_shaped_dag_does_not_make_c_wait_for_b(worker: Any) -> None:
    # Given a->c, a->d, b->d where b is slow
    wf = Workflow("n-shape")
    wf.step("a", workload.sleepy, kwargs={"seconds": 0.0})
    wf.step("b", workload.sleepy, kwargs={"seconds": 2.0})
    wf.step("c", workload.sleepy, after="a")
    wf.step("d", workload.sleepy, after=["a", "b"])
    run = wf.run()
    assert run.wait(timeout=30) == {"c": "c", "d": "d"}
    steps = {s.step_id: s for s in run.steps()}
    # Then c finished before b did, and d started only after both a and b finished
    assert steps["c"].finished_at < steps["b"].finished_at
    assert steps["d"].started_at >= steps["b"].finished_at
    assert steps["d"].started_at >= steps["a"].finished_at


def test_failing_step_fails_run_and_skips_dependents(worker: Any) -> None:
    # Given a -> (bad, slow) -> join -> after, where bad raises
    wf = Workflow("failing")
    wf.step("a", workload.noop)
    wf.step("bad", workload.boom, after="a", kwargs={"seconds": 0.2})
    wf.step("slow", workload.sleepy, after="a", kwargs={"seconds": 0.5})
    wf.step("join", workload.noop, after=["bad", "slow"])
    wf.step("after", workload.noop, after="join")
    run = wf.run()
    # When it runs, wait() raises WorkflowFailed naming the step and the error
    with pytest.raises(WorkflowFailed) as failed:
        run.wait(timeout=30)
    assert failed.value.step == "bad" and "boom in bad" in str(failed.value)
    # Then the run is failed, dependents skipped, nothing left pending or running
    assert run.status() == RunStatus.FAILED
    statuses = _settle(run)
    assert statuses == {
        "a": "succeeded",
        "bad": "failed",
        "slow": "succeeded",
        "join": "skipped",
        "after": "skipped",
    }
    bad = next(s for s in run.steps() if s.step_id == "bad")
    assert "ValueError" in bad.attempt_log[0].traceback


def test_cancel_stops_steps_not_yet_started(worker: Any) -> None:
    # Given a run whose first step takes a while
    wf = Workflow("cancellable")
    wf.step("first", workload.sleepy, kwargs={"seconds": 1.5})
    wf.step("second", workload.noop, after="first")
    wf.step("third", workload.noop, after="second")
    run = wf.run()
    eventually(lambda: run.record().status == "running", 10, "the run to start")
    # When it is cancelled while the first step runs
    assert run.cancel() is True
    with pytest.raises(WorkflowFailed) as failed:
        run.wait(timeout=10)
    # Then the run is cancelled, the running step finishes, later steps never start
    assert failed.value.status == "cancelled"
    statuses = _settle(run)
    assert statuses["second"] == "cancelled" and statuses["third"] == "cancelled"
    assert statuses["first"] in ("succeeded", "cancelled")
    time.sleep(2.0)
    assert run.status() == RunStatus.CANCELLED
    assert run.cancel() is False


def test_idempotency_key_gives_one_run_even_when_submits_race(worker: Any) -> None:
    # Given 8 threads submitting with one idempotency key at once
    key = f"key-{uuid.uuid4()}"
    ids: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        ids.append(run_workflow("diamond-key", {"x": 1, "y": 1}, idempotency_key=key).id)

    wf = Workflow("diamond-key")
    wf.step("add", workload.add)
    wf.step("double", workload.double, after="add")
    _ = wf.spec  # registers the workflow by name
    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every submit returned the same run, and exactly one run exists for the key
    assert len(set(ids)) == 1
    assert get_run(ids[0]).wait(timeout=30) == 4
    assert [r.id for r in list_runs(workflow="diamond-key")] == ids[:1]


def test_unknown_run_id_raises_run_not_found(servers: Any) -> None:
    with pytest.raises(RunNotFound, match="does not exist"):
        get_run(str(uuid.uuid4()))
    with pytest.raises(RunNotFound):
        get_run("not-a-run-id")


def test_rows_exist_before_first_message_and_ids_match(worker: Any) -> None:
    # Given a submitted run
    key = f"ids-{uuid.uuid4().hex[:8]}"
    wf = Workflow("ids")
    wf.step("a", workload.whoami, kwargs={"key": key})
    wf.step("b", workload.whoami, after="a", kwargs={"key": key})
    run = wf.run()
    steps = run.steps()
    # Then its step rows were written at submit with the Celery task ids the canvas uses
    assert [s.step_id for s in steps] == ["a", "b"]
    run.wait(timeout=30)
    ran = {c["step"]: c["task_id"] for c in workload.calls(key)}
    assert ran == {s.step_id: s.celery_task_id for s in run.steps()}
    # and Celery's backend keeps no copy of a step's result (history and run state have it)
    from orchestrator.app import default_services

    app = default_services().app
    assert {app.AsyncResult(s.celery_task_id).status for s in run.steps()} == {"PENDING"}


def test_list_runs_filters_by_workflow_and_status(worker: Any) -> None:
    wf = Workflow("listed")
    wf.step("a", workload.noop)
    first = wf.run()
    first.wait(timeout=30)
    runs = list_runs(workflow="listed", status="succeeded")
    assert first.id in [r.id for r in runs]
    assert all(r.workflow == "listed" for r in runs)
    assert list_runs(workflow="listed", status="failed") == []
