"""Fork safety of a worker's main process: its threads never import anything.

Prefork replaces pool processes at any time (a killed child, ``max_tasks_per_child``), forking
the main process as it is at that moment (field notes, "Traps inside Celery"). A module lock held
by one of our threads during a lazy import (the reconciler importing psycopg on its first query,
say) stays held forever in the new child, which then hangs the first time it imports that module.
So, in its main thread and before any thread of ours starts, the main process imports, connects
and prepares everything those threads use: the database driver and engine, the reconciler's
queries, Redis and its scripts, the broker connection, the producer and the result backend.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from orchestrator.engine.services import Services

# our modules the main process's threads use, imported here in the main thread
from orchestrator.ops import deadlines, delays, metrics, reconciler, recovery  # noqa: F401
from orchestrator.stores.redis import delays as delayed_messages  # noqa: F401

log = logging.getLogger("orchestrator")

# third-party modules the main process's threads reach lazily (drivers, dialects, transports,
# backends): imported by name, as the code that needs them does
MODULES = (
    "psycopg",
    "psycopg.pq",
    "psycopg.types",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.sql.default_comparator",
    "sqlalchemy.orm",
    "kombu.transport.redis",
    "celery.backends.redis",
    "celery.app.amqp",
    "celery.canvas",
    "celery.events.dispatcher",
    "celery.events.event",
    "celery.events.receiver",
    "kombu.mixins",
    "kombu.utils.limits",
    "redis.commands",
    "prometheus_client",
    "http.server",
)


def prepare(rt: Services) -> list[str]:
    """Import and warm up, in the calling (main) thread, what the main process's threads use.

    A server that is down now is skipped (the step is logged); returns the steps that failed.
    """
    for name in MODULES:
        importlib.import_module(name)
    failed = []
    for step in (_database, _reconciler_queries, _redis, _broker):
        try:
            step(rt)
        except Exception as exc:  # a server down at start: the worker still starts
            log.warning("fork-safety warm-up %s skipped: %s", step.__name__.strip("_"), exc)
            failed.append(step.__name__.strip("_"))
    return failed


def _database(rt: Services) -> None:
    rt.history.ping()


def _reconciler_queries(rt: Services) -> None:
    store, settings = rt.history, rt.settings
    queries: list[Callable[[], object]] = [
        lambda: store.settled_runs(limit=1),
        lambda: store.unpublished_runs(settings.lease_seconds, limit=1),
        lambda: store.suspect_steps(settings.lease_seconds, limit=1),
        lambda: store.stalled_runs(settings.stall_timeout, limit=1),
        lambda: store.late_retries(settings.lease_seconds, limit=1),
        lambda: store.orphaned_steps(settings.lease_seconds, limit=1),
        lambda: store.get_run("00000000-0000-0000-0000-000000000000"),
        lambda: store.get_steps("00000000-0000-0000-0000-000000000000"),
    ]
    for query in queries:
        query()
    rt.writer.flush(timeout=0)


def _redis(rt: Services) -> None:
    rt.state.ping()
    rt.delays.size()


def _broker(rt: Services) -> None:
    app = rt.app
    _ = app.backend  # the result backend's module, imported once here
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1)
