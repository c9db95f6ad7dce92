"""Tasks of ``test_context_and_workers``: steps that set the run's context in parallel, a step
held running until the test releases it, and one behind a circuit breaker."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from orchestrator import Workflow, circuit_breaker, current_run, task

QUEUE = "ctx"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])


@task
def begin(key: str) -> str:
    current_run.context.set("begun", {"by": current_run.step_id})
    return key


@task
def child_inputs(key: str) -> dict[str, str]:
    return {"key": key}


@task
def meet_and_set(key: str, side: str) -> str:
    """Sets context key ``side`` once both parallel steps are running (a rendezvous in Redis),
    so the two sets happen at once, from two pool processes."""
    client = _redis()
    client.sadd(f"test:meet:{key}", side)
    deadline = time.monotonic() + 20
    while client.scard(f"test:meet:{key}") < 2:
        assert time.monotonic() < deadline, "the other parallel step never started"
        time.sleep(0.01)
    current_run.context.set(side, {"pid": os.getpid(), "seen": current_run.context.get("begun")})
    return side


@task
def read_back(parents: dict[str, str]) -> dict[str, Any]:
    ctx = current_run.context
    return {side: ctx.get(side) for side in sorted(parents)}


@task
def held(*args: Any, key: str) -> str:
    """Runs until the Redis key ``test:hold:<key>`` is gone."""
    client = _redis()
    deadline = time.monotonic() + 120
    while client.exists(f"test:hold:{key}") and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"


def hold(key: str) -> None:
    _redis().set(f"test:hold:{key}", 1, ex=300)


def release(key: str) -> None:
    _redis().delete(f"test:hold:{key}")


@task
@circuit_breaker("ctx-breaker", failure_threshold=1, reset_timeout=600.0)
def behind_breaker(*args: Any, **kwargs: Any) -> str:
    return "called"


CHILD = Workflow("ctx_child").step("c", held, queue=QUEUE)
"""A child workflow whose step holds until released (its inputs: ``{"key": ...}``)."""
