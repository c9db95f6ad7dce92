"""Tasks of the priority and queue-timeout integration tests; their workers import this module."""

from __future__ import annotations

import os
import time

import redis

from orchestrator import task


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])


@task
def prio_block(key: str, limit: float = 120.0) -> str:
    """Keep this worker's only process busy until the test sets ``<key>:release``."""
    client = redis_client()
    client.set(f"{key}:started", 1)
    deadline = time.monotonic() + limit
    while not client.exists(f"{key}:release"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was not released within {limit}s")
        time.sleep(0.05)  # waits for the test's signal, not for another process to catch up
    return "released"


@task
def prio_mark(key: str, tag: str) -> str:
    """Note that the run tagged ``tag`` started, in start order."""
    redis_client().rpush(key, tag)
    return tag


@task
def prio_after(value: object) -> object:
    """A step after another (gets its result)."""
    return value
