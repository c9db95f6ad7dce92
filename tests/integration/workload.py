"""Tasks the integration tests run on real workers (ORCHESTRATOR_TASK_MODULES includes this)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import signals

from orchestrator import current_run, task


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def double(n: int) -> int:
    return n * 2


@task
def triple(n: int) -> int:
    return n * 3


@task
def total(parents: dict[str, int]) -> dict[str, Any]:
    return {"sum": sum(parents.values()), "parents": sorted(parents)}


@task
def sleepy(*args: Any, seconds: float = 0.0, **kwargs: Any) -> str:
    time.sleep(seconds)
    return current_run.step_id


@task
def noop(*args: Any, **kwargs: Any) -> None:
    return None


@task
def boom(*args: Any, seconds: float = 0.0, **kwargs: Any) -> None:
    time.sleep(seconds)
    raise ValueError(f"boom in {current_run.step_id}")


@task
def root(n: int) -> int:
    return n


# -- message accounting: every message a test process or worker publishes ---------------------

_client: redis.Redis | None = None


def _sizes() -> redis.Redis | None:
    global _client
    url = os.environ.get("ORCHESTRATOR_TEST_PUBLISH_LOG")
    if not url:
        return None
    if _client is None:
        _client = redis.Redis.from_url(url)
    return _client


@signals.before_task_publish.connect
def _log_publish(body: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    client = _sizes()
    if client is None:
        return
    size = len(json.dumps(body, default=str)) + len(json.dumps(headers, default=str))
    name = (headers or {}).get("task", "?")
    client.rpush("test:published", json.dumps([name, size]))
