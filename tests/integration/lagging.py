"""Tasks of the late-success tests (``test_shapes``): steps that end after their run ended, on a
worker of their own (its history lags), which alone imports this module and consumes its queue.
"""

from __future__ import annotations

import time

import redis

from orchestrator import Workflow, task
from tests.integration.shapes import redis_client, tally

LATE_KEY = "test:shapes:late"
LAGGING = "shapes_lagging"
"""The queue of these steps: only the worker that imports this module consumes it."""


def _await(client: redis.Redis, key: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.exists(key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} was not set within {timeout}s")
        time.sleep(0.02)


@task
def given(items: list[int]) -> list[int]:
    return items


@task
def late(n: int) -> int:
    """Until the test mends it (sets LATE_KEY): item 0 fails once another item runs, any other
    item runs until the test releases it. Counts each call per item."""
    client = redis_client()
    client.hincrby(f"{LATE_KEY}:calls", str(n), 1)
    if client.exists(LATE_KEY):
        return n
    if n == 0:
        _await(client, f"{LATE_KEY}:running")
        raise RuntimeError("item 0 is broken")
    client.set(f"{LATE_KEY}:running", 1)
    _await(client, f"{LATE_KEY}:release")
    return n


LATE = (
    Workflow("shapes_late")
    .step("list", given, queue=LAGGING)
    .step("item", late, for_each="list", queue=LAGGING)
    .step("tally", tally, after="item", queue=LAGGING)
)
