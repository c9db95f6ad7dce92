"""Tasks the integration tests run on real workers (ORCHESTRATOR_TASK_MODULES includes this)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import signals

from orchestrator import circuit_breaker, current_run, retry, task


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


# -- resilience -------------------------------------------------------------------------------


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])


def calls(key: str) -> list[dict[str, Any]]:
    """What the tasks below recorded under ``key``."""
    return [json.loads(x) for x in _redis().lrange(f"test:calls:{key}", 0, -1)]


def _note(key: str, **fields: Any) -> None:
    _redis().rpush(f"test:calls:{key}", json.dumps({"at": time.time(), **fields}))


@task
def whoami(*args: Any, key: str) -> None:
    """Notes the step and the Celery task id it ran under."""
    _note(key, step=current_run.step_id, task_id=current_run.task_id)


@task
@retry(max_attempts=4, base_delay=1.0, backoff=2.0, jitter=False, on=(ConnectionError,))
def flaky(key: str, succeed_on: int = 3) -> int:
    """Fails with ConnectionError until attempt ``succeed_on``."""
    _note(key, attempt=current_run.attempt)
    if current_run.attempt < succeed_on:
        raise ConnectionError(f"attempt {current_run.attempt} failed")
    return current_run.attempt


@task
@retry(max_attempts=4, on=(ConnectionError,))
def picky(key: str) -> None:
    """Raises an error its policy does not retry."""
    _note(key, attempt=current_run.attempt)
    raise ValueError("not retryable")


@task
@circuit_breaker("test-breaker", failure_threshold=3, reset_timeout=2.0)
def guarded(key: str, *args: Any) -> str:
    """Fails while the Redis flag ``test:down:<key>`` is set; each call takes 0.3 s."""
    start = time.time()
    time.sleep(0.3)
    failing = bool(_redis().exists(f"test:down:{key}"))
    _note(key, start=start, end=time.time(), ok=not failing, pid=os.getpid())
    if failing:
        raise ConnectionError("downstream is down")
    return "ok"


@task
def stubborn(seconds: float) -> str:
    """Ignores the soft time limit, so only the hard limit stops it."""
    from celery.exceptions import SoftTimeLimitExceeded

    end = time.time() + seconds
    while time.time() < end:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue
    return "finished"


@task
def switch(*args: Any, key: str) -> str:
    """Fails while the Redis flag ``test:down:<key>`` is set."""
    _note(key, attempt=current_run.attempt)
    if _redis().exists(f"test:down:{key}"):
        raise RuntimeError(f"{key} is switched off")
    return f"{key} ok"


def set_down(key: str, down: bool) -> None:
    if down:
        _redis().set(f"test:down:{key}", 1)
    else:
        _redis().delete(f"test:down:{key}")


# -- every run ends ---------------------------------------------------------------------------


@task
def slow_first(key: str, seconds: float = 5.0) -> int:
    """Runs past any short hard time limit on attempt 1 (ignoring the soft one); quick after."""
    _note(key, attempt=current_run.attempt)
    if current_run.attempt == 1:
        stubborn.run(seconds)
    return current_run.attempt


@task
def typed(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Values Celery's JSON carries that the standard library's does not."""
    import datetime
    import decimal
    import uuid as uuid_module

    return {
        "at": datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("12.50"),
        "id": uuid_module.UUID("12345678-1234-5678-1234-567812345678"),
    }


@task
def type_names(value: dict[str, Any]) -> dict[str, Any]:
    """What a dependent received: the type of each value, and the values."""
    return {"types": {k: type(v).__name__ for k, v in value.items()}, "value": value}


@task
def opaque(*args: Any, **kwargs: Any) -> Any:
    """Returns a value no JSON encoder takes."""
    return object()
