"""The benchmark's no-op task, and broker message-size logging.

``noop`` is an ``@orchestrator.task``: called through raw Celery canvas (``noop.si()``) it is a
plain Celery task; named in a workflow step it runs as a step. The worker imports this module via
``ORCHESTRATOR_TASK_MODULES=bench.tasks`` (with ``PYTHONPATH`` at the project root).

When ``BENCH_PUBLISH_LOG`` holds a Redis URL, every message this process publishes appends
``[task name, size in bytes]`` to the Redis list ``bench:published`` (size of the JSON body plus
the JSON headers, as ``tests/integration/workload.py`` measures it). Unset, the hook does nothing,
so timed runs are not slowed by it.

When ``BENCH_PROFILE`` is set (``bench/bench_profile.py`` sets it on a ``--pool solo`` worker),
the process counts its SQL statements and ``profile_start``/``profile_stop`` switch cProfile on
and off in it (``bench/profiling.py``). Unset, they do nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis
from celery import signals

from bench import profiling
from orchestrator import task

PUBLISH_LOG_ENV = "BENCH_PUBLISH_LOG"
PUBLISHED_KEY = "bench:published"

_clients: dict[str, redis.Redis] = {}


@task
def noop(*args: Any, **kwargs: Any) -> None:
    """Does nothing: what is measured is the cost of running a task, not its work."""
    return None


def _client(url: str) -> redis.Redis:
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


def message_size(body: Any, headers: dict[str, Any] | None) -> int:
    """Bytes of a message's body and headers as JSON."""
    return len(json.dumps(body, default=str)) + len(json.dumps(headers, default=str))


@signals.before_task_publish.connect
def _log_publish(body: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    url = os.environ.get(PUBLISH_LOG_ENV)
    if not url:
        return
    name = (headers or {}).get("task", "?")
    _client(url).rpush(PUBLISHED_KEY, json.dumps([name, message_size(body, headers)]))


@task
def numbers(count: int) -> list[int]:
    """``count`` items for a ``for_each`` (``bench/bench_for_each.py``)."""
    return list(range(count))


@task
def profile_start() -> None:
    """Switch cProfile and SQL counting on in this (solo) worker process."""
    if os.environ.get(profiling.PROFILE_ENV):
        profiling.count_sql()
        profiling.start()


@task
def profile_stop(path: str) -> None:
    """Switch cProfile off; write it to ``path`` and the SQL counts beside it."""
    if os.environ.get(profiling.PROFILE_ENV):
        profiling.stop(path)
