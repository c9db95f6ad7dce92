"""History writes are batched off the hot path, and a normal worker shutdown loses none."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import Workflow
from orchestrator.runtime import runtime
from tests.integration import workload

pytestmark = pytest.mark.integration


def test_warm_shutdown_writes_every_buffered_event(
    start_worker: Callable[..., Any], worker: Any
) -> None:
    # Given a worker on its own queue whose history writer holds events for 60 seconds
    # (a run's end is written at once, so the sink runs on the shared worker)
    held = start_worker(
        "held", args=["-c", "2", "-Q", "held"], env={"ORCHESTRATOR_HISTORY_FLUSH_INTERVAL": "60"}
    )
    wf = Workflow("held-history")
    wf.step("a", workload.add, queue="held")
    wf.step("b", workload.double, after="a", queue="held")
    wf.step("c", workload.triple, after="a", queue="held")
    wf.step("d", workload.total, after=["b", "c"])
    runs = [wf.run({"x": i, "y": 1}) for i in range(5)]
    # When every step has finished in Celery but the held worker's history is still buffered,
    # the runs are not succeeded yet: a run succeeds only once every step row says so
    app = runtime().app
    for run in runs:
        sink = next(s for s in run.steps() if s.step_id == "d")
        app.AsyncResult(sink.celery_task_id).get(timeout=30)
    assert all(run.status() != "succeeded" for run in runs)
    # and the worker is shut down normally (SIGTERM: warm shutdown)
    assert held.stop(signal.SIGTERM) == 0
    # Then every run, step and attempt is in PostgreSQL
    for i, run in enumerate(runs):
        assert run.status() == "succeeded"
        assert run.output == {"sum": (i + 1) * 5, "parents": ["b", "c"]}
        steps = run.steps()
        assert [s.status for s in steps] == ["succeeded"] * 4
        assert all(len(s.attempt_log) == 1 and s.attempt_log[0].worker for s in steps)
        assert all(s.started_at <= s.finished_at for s in steps)


def test_wait_wakes_on_completion_without_polling_the_database(worker: Any) -> None:
    # Given a run that takes about a second
    wf = Workflow("wakeup")
    wf.step("a", workload.sleepy, kwargs={"seconds": 1.0})
    run = wf.run()
    reads = 0
    original = run.record

    def counting() -> Any:
        nonlocal reads
        reads += 1
        return original()

    run.record = counting  # type: ignore[method-assign]
    started = time.monotonic()
    # When the caller waits
    assert run.wait(timeout=30) == "a"
    # Then it returned soon after the end, having read the run row only a few times
    assert time.monotonic() - started < 3.0
    assert reads <= 3
