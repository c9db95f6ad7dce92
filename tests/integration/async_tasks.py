"""``async def`` tasks the integration tests run on real workers (in ORCHESTRATOR_TASK_MODULES)."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from orchestrator import current_run, retry, task
from tests.integration.workload import _note, _redis


def _where() -> dict[str, Any]:
    """The process, thread and event loop a coroutine runs in."""
    loop = id(asyncio.get_running_loop())
    return {"pid": os.getpid(), "thread": threading.current_thread().name, "loop": loop}


@task
async def fetch_page(url: str) -> dict[str, Any]:
    """Awaits (as an HTTP client would) and says where it ran, and for which step."""
    await asyncio.sleep(0.05)
    step = current_run.step_id if current_run else None
    return {"url": url, "step": step, **_where()}


@task
@retry(max_attempts=2, base_delay=0.1, jitter=False)
async def slow_first_async(key: str, seconds: float = 5.0) -> int:
    """Overruns any short time limit on attempt 1, noting its cancellation; quick after."""
    attempt: int = current_run.attempt
    await asyncio.to_thread(_note, key, attempt=attempt, event="started")
    if attempt == 1:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await asyncio.to_thread(_note, key, attempt=attempt, event="cancelled")
            raise
    return attempt


@task
async def meet(key: str, parties: int = 2) -> dict[str, Any]:
    """Arrives under ``key``, then waits (up to 10 s) until ``parties`` steps have: the steps
    that return ran at the same time."""
    counter = f"test:meet:{key}"
    await asyncio.to_thread(_redis().incr, counter)
    for _ in range(200):
        if int(await asyncio.to_thread(_redis().get, counter) or 0) >= parties:
            return {"step": current_run.step_id, **_where()}
        await asyncio.sleep(0.05)
    raise TimeoutError(f"fewer than {parties} steps met under {key}")
