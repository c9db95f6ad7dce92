"""Tasks of the rate-limit integration tests; their workers import this module (it is not in
the session's ORCHESTRATOR_TASK_MODULES) and consume the queue :data:`QUEUE` only."""

from __future__ import annotations

import json
import os
from typing import Any

import redis

from orchestrator import current_run, task

QUEUE = "rate-limited"
MODULE = __name__


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])


@task(bind=True)
def stamp(self: Any, item: Any = None, *, log: str, **_: Any) -> Any:
    """Note the start (Redis's clock, the one the limiter reads), the worker and the attempt."""
    client = _redis()
    seconds, micros = client.time()
    entry = {
        "at": seconds + micros / 1e6,
        "worker": str(self.request.hostname),
        "pid": os.getpid(),
        "run": current_run.run_id,
        "step": current_run.step_id,
        "attempt": current_run.attempt,
    }
    client.rpush(f"test:rl:{log}", json.dumps(entry))
    return item


@task
def listing(count: int, **_: Any) -> list[int]:
    return list(range(count))


def starts(log: str) -> list[dict[str, Any]]:
    """What :func:`stamp` noted under ``log``, in start order."""
    raw = _redis().lrange(f"test:rl:{log}", 0, -1)
    return sorted((json.loads(x) for x in raw), key=lambda e: float(e["at"]))
