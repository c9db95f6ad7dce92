"""``async def`` steps on real workers: the event loop of each pool process, time limits,
retries, and steps that overlap on one loop."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import Workflow
from orchestrator.app import default_services
from tests.integration import async_tasks
from tests.integration.workload import calls

pytestmark = pytest.mark.integration


def _events(key: str) -> list[tuple[int, str]]:
    return [(c["attempt"], c["event"]) for c in calls(key)]


def test_an_async_step_returns_its_result_from_the_loop_of_its_pool_process(worker: Any) -> None:
    # Given a workflow whose step is an async def task
    run = Workflow("async-fetch").step("fetch", async_tasks.fetch_page).run({"url": "u"})
    # When it runs on a prefork worker
    out = run.wait(timeout=30)
    # Then it ran on the event loop's thread, as that step (current_run reached the coroutine)
    assert (out["url"], out["step"], out["thread"]) == ("u", "fetch", "orchestrator-event-loop")
    assert out["pid"] in worker.pool()
    assert [a.status for a in run.steps()[0].attempt_log] == ["succeeded"]


def test_an_async_task_called_as_a_plain_celery_task_returns_its_result(worker: Any) -> None:
    sent = default_services().app.send_task(async_tasks.fetch_page.name, args=["plain"])
    assert sent.get(timeout=30)["step"] is None


def test_async_steps_in_two_pool_processes_run_on_a_loop_each(worker: Any) -> None:
    key = uuid.uuid4().hex
    wf = Workflow("async-meet-prefork")
    wf.step("a", async_tasks.meet, kwargs={"key": key})
    wf.step("b", async_tasks.meet, kwargs={"key": key})

    out = wf.run().wait(timeout=30)

    assert out["a"]["pid"] != out["b"]["pid"]
    assert {out["a"]["pid"], out["b"]["pid"]} <= set(worker.pool())


def test_the_soft_time_limit_cancels_the_coroutine_and_the_step_is_retried(worker: Any) -> None:
    # Given an async step that overruns its 0.5 s soft limit on attempt 1 only
    key = uuid.uuid4().hex
    wf = Workflow("async-soft").step(
        "slow", async_tasks.slow_first_async, kwargs={"key": key}, soft_timeout=0.5, timeout=5.0
    )
    # When it runs
    run = wf.run()
    # Then attempt 1's coroutine was cancelled (its handler ran) and attempt 2 succeeded
    assert run.wait(timeout=30) == 2
    assert _events(key) == [(1, "started"), (1, "cancelled"), (2, "started")]
    first = run.steps()[0].attempt_log[0]
    assert first.status == "retrying" and "SoftTimeLimitExceeded" in (first.error or "")


def test_the_hard_time_limit_kills_the_process_and_the_step_is_retried(worker: Any) -> None:
    # Given an async step that overruns its 1 s hard limit on attempt 1 only (no soft limit)
    key = uuid.uuid4().hex
    wf = Workflow("async-hard").step(
        "slow", async_tasks.slow_first_async, kwargs={"key": key}, timeout=1.0
    )
    # When it runs
    run = wf.run()
    # Then attempt 1 was killed with its process (nothing ran after), and attempt 2 succeeded
    assert run.wait(timeout=30) == 2
    assert _events(key) == [(1, "started"), (2, "started")]
    assert "hard time limit" in (run.steps()[0].attempt_log[0].error or "")


def test_two_async_steps_in_one_process_share_its_loop_at_the_same_time(
    start_worker: Callable[..., Any],
) -> None:
    # Given a worker with one process and two threads, and two steps that each wait until both
    # have started
    start_worker("async-threads", args=("-P", "threads", "-Q", "async-threads"))
    key = uuid.uuid4().hex
    wf = Workflow("async-meet")
    for step_id in ("a", "b"):
        wf.step(step_id, async_tasks.meet, kwargs={"key": key}, queue="async-threads")
    # When they run
    out = wf.run().wait(timeout=30)
    # Then both met: they ran on the same loop of the same process, neither blocking it
    a, b = out["a"], out["b"]
    assert (a["pid"], a["loop"]) == (b["pid"], b["loop"])
    assert a["thread"] == b["thread"] == "orchestrator-event-loop"
