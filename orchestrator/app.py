"""The composition root: ``create_app(settings)`` builds a Celery app and the engine's services
(Redis and PostgreSQL adapters of the ports), and binds them to the app; ``@task``.

Nothing else wires things. The *default app* is the one ``@task`` registers on and
``run_workflow`` uses when given no ``app=``; tests replace it with
``set_default_app(create_app(settings))`` and forget it with ``reset_default_app()`` (as
dramatiq's ``set_broker`` does). Tasks are shared: every app built here has them all.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from celery import Celery, signals

from orchestrator.core.priorities import (
    DEFAULT,
    HIGHEST,
    REDIS_PRIORITY_STEPS,
    broker_priority,
    reversed_by,
)
from orchestrator.engine import (
    child_task,  # noqa: F401  (registers the framework's own task)
    publishing,
    queued,  # noqa: F401  (registers the start of queued runs)
    wait_task,  # noqa: F401  (registers sleep/wait_for's task)
)
from orchestrator.engine.event_loop import blocking
from orchestrator.engine.services import Adapters, Services, bind, services_of
from orchestrator.engine.task import StepTask
from orchestrator.ops import deadlines  # noqa: F401  (registers the framework's own task)
from orchestrator.ports import RunHistory, RunStateStore
from orchestrator.records import Ended
from orchestrator.settings import Settings, get_settings
from orchestrator.stores.postgres.store import HistoryStore
from orchestrator.stores.postgres.waits import PostgresWaits
from orchestrator.stores.postgres.writer import HistoryWriter
from orchestrator.stores.redis.breakers import RedisBreakerStore
from orchestrator.stores.redis.context import RedisRunContext
from orchestrator.stores.redis.delays import DelayedMessages
from orchestrator.stores.redis.queue_timeouts import QueueTimeouts
from orchestrator.stores.redis.rate_limits import RedisRateLimits
from orchestrator.stores.redis.runs import RunState
from orchestrator.stores.redis.slots import RedisSlots
from orchestrator.stores.redis.workers import WorkerRegistry

F = TypeVar("F", bound=Callable[..., Any])
_default: Celery | None = None
_default_lock = threading.RLock()


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours: JSON only, late acks, results expiring."""
    # a hung broker must not block a submit forever (kombu's Redis transport waits by default)
    visibility = {
        "visibility_timeout": settings.visibility_timeout,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 5.0,
    }
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.backend_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_track_started": True,
        # task events as Celery has them: off unless asked for (a Redis round trip each);
        # Flower turns them on in the workers it watches (`enable_events`), and shows tasks
        # without sent events, which would cost every publisher a round trip per message
        "task_send_sent_event": False,
        "worker_send_task_events": settings.task_events,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "broker_connection_retry_on_startup": True,
        "redis_socket_timeout": 5.0,
        "redis_socket_connect_timeout": 5.0,
        "broker_transport_options": {**visibility, **priority_transport(settings)},
        "result_backend_transport_options": visibility,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        **priority_config(settings),
        **(
            {"worker_concurrency": settings.worker_concurrency}
            if settings.worker_concurrency
            else {}
        ),
    }


def priority_transport(settings: Settings) -> dict[str, Any]:
    """On Redis, one list per priority 0..9 (kombu's default has four); Flower reads it too."""
    return {"priority_steps": REDIS_PRIORITY_STEPS} if reversed_by(settings.broker_url) else {}


def priority_config(settings: Settings) -> dict[str, Any]:
    """Priorities as each broker reads them (``core.priorities``): a message published with no
    priority is priority 0 on Redis as on RabbitMQ (whose queues get ``x-max-priority``)."""
    if reversed_by(settings.broker_url):
        return {"task_default_priority": broker_priority(DEFAULT, reverse=True)}
    return {"task_queue_max_priority": HIGHEST} if settings.priority_queues else {}


def redis_postgres(settings: Settings) -> Adapters:
    """The production adapters: history in PostgreSQL, run state, breakers and delays in Redis."""

    def state() -> RunState:
        return RunState(
            settings.state_url,
            settings.result_expires,
            ended_ttl=max(2 * settings.visibility_timeout, 3600),
        )

    def writer(history: RunHistory, announce: Callable[[list[Ended]], None]) -> Any:
        return HistoryWriter(
            cast(HistoryStore, history),
            flush_interval=settings.history_flush_interval,
            batch_size=settings.history_batch_size,
            queue_size=settings.history_queue_size,
            on_finalized=announce,
        )

    return Adapters(
        history=lambda: HistoryStore(settings.sqlalchemy_url),
        state=state,
        breakers=lambda s: RedisBreakerStore(_client(s)),
        delays=lambda s: DelayedMessages(_client(s)),
        rate_limits=lambda s: RedisRateLimits(_client(s)),
        slots=lambda s: RedisSlots(_client(s)),
        contexts=lambda s: RedisRunContext(_client(s), settings.result_expires),
        workers=lambda s: WorkerRegistry(_client(s)),
        waits=lambda h: PostgresWaits(cast(HistoryStore, h)),
        queue_timeouts=lambda s: QueueTimeouts(_client(s)),
        writer=writer,
    )


def _client(state: RunStateStore) -> Any:
    return cast(RunState, state).client  # breakers and delays share run state's connections


def create_app(
    settings: Settings | None = None,
    main: str = "orchestrator",
    *,
    adapters: Adapters | None = None,
    **overrides: Any,
) -> Celery:
    """A Celery app configured from ``settings`` (default: ``ORCHESTRATOR_*`` variables), with
    the engine's services bound to it; Celery ``overrides`` win. ``adapters`` replace the
    Redis and PostgreSQL ones (``orchestrator.testing`` passes in-memory twins)."""
    settings = settings or get_settings()
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.update(overrides)
    services = Services(settings, app, adapters or redis_postgres(settings))
    bind(app, services)
    publishing.install(app, services)  # priorities and queue timeouts of what Celery publishes
    # weak references to bound methods: a test's app and its services can be collected
    signals.worker_process_init.connect(services.after_fork)
    signals.worker_process_shutdown.connect(services.close)
    signals.worker_shutdown.connect(services.close)
    return app


def get_app() -> Celery:
    """The default app: ``@task`` registers on it; built from settings on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = create_app()
            _default.set_default()
        return _default


def set_default_app(app: Celery) -> Celery:
    """Make ``app`` (from :func:`create_app`) the default app, for tests; returns it."""
    global _default
    services_of(app)  # refuse an app without services
    with _default_lock:
        _default = app
        app.set_default()
    return app


def reset_default_app() -> None:
    """Forget the default app (its history writer is flushed); the next use builds a new one
    from the settings of that moment."""
    global _default
    with _default_lock:
        if _default is not None:
            services_of(_default).close()
        _default = None


def default_services(app: Celery | None = None) -> Services:
    """The services of ``app``, or of the default app."""
    return services_of(app or get_app())


@overload
def task(fn: F) -> Any: ...
@overload
def task(fn: None = None, **options: Any) -> Callable[[F], Any]: ...


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Register ``fn`` as a Celery task usable as a workflow step; Celery options pass through.

    ``@retry`` and ``@circuit_breaker`` applied below ``@task`` become the task's
    ``retry_policy`` and ``breaker``. The task is shared: every app ``create_app`` builds has it.
    An ``async def`` function's task runs it on the process's event loop and waits for it
    (``orchestrator.engine.event_loop``): called as a step or plainly, it returns the result.
    """

    def register(func: Callable[..., Any]) -> Any:
        extra = {k: getattr(func, k) for k in ("retry_policy", "breaker") if hasattr(func, k)}
        if inspect.iscoroutinefunction(func):
            func = blocking(func)
        return get_app().task(base=StepTask, shared=True, lazy=False, **extra, **options)(func)

    return register(fn) if fn is not None else register
