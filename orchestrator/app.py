"""The Celery app: ``create_app`` with secure defaults, the default app, and ``@task``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from celery import Celery, Task, signals

from orchestrator.settings import Settings, get_settings

F = TypeVar("F", bound=Callable[..., Any])
_default: Celery | None = None


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from ours: JSON only, late acks, events on, results expiring."""
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
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "broker_connection_retry_on_startup": True,
        "redis_socket_timeout": 5.0,
        "redis_socket_connect_timeout": 5.0,
        "broker_transport_options": visibility,
        "result_backend_transport_options": visibility,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        **(
            {"worker_concurrency": settings.worker_concurrency}
            if settings.worker_concurrency
            else {}
        ),
    }


def create_app(main: str = "orchestrator", **overrides: Any) -> Celery:
    """A Celery app configured from ``ORCHESTRATOR_*`` settings; ``overrides`` win."""
    settings = get_settings()
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.update(overrides)
    return app


def get_app() -> Celery:
    """The process-wide orchestrator app that ``@task`` registers on."""
    global _default
    if _default is None:
        _default = create_app()
        _default.set_default()
        signals.worker_process_init.connect(_after_fork, weak=False)
        signals.worker_process_shutdown.connect(_close_history, weak=False)
        signals.worker_shutdown.connect(_close_history, weak=False)
        _connect_operations()
    return _default


def _after_fork(**_: Any) -> None:
    from orchestrator.engine.execution import LEASES
    from orchestrator.engine.runtime import after_fork

    after_fork()
    LEASES.after_fork()


def _close_history(**_: Any) -> None:
    # imported here: execution sits beside this module and needs the app itself
    from orchestrator.engine.execution import shutdown

    shutdown()


def _connect_operations() -> None:
    """Worker log format and context, and the monitoring endpoint of the main process."""
    signals.after_setup_logger.connect(_setup_logs, weak=False)
    signals.after_setup_task_logger.connect(_setup_logs, weak=False)
    signals.worker_ready.connect(_start_monitoring, weak=False)
    signals.worker_shutdown.connect(_stop_monitoring, weak=False)
    signals.worker_process_init.connect(_child_monitoring, weak=False)


def _setup_logs(logger: Any = None, **_: Any) -> None:
    from orchestrator.logs import configure

    configure(logger, get_settings().log_format)


def _start_monitoring(sender: Any = None, **_: Any) -> None:
    # imported only by a worker that serves it: prometheus-client and http.server stay unloaded
    if get_settings().metrics_port is not None:
        from orchestrator.ops import monitoring

        monitoring.start(sender.app, get_settings(), get_settings().metrics_host)


def _stop_monitoring(**_: Any) -> None:
    if get_settings().metrics_port is not None:
        from orchestrator.ops import monitoring

        monitoring.stop()


def _child_monitoring(**_: Any) -> None:
    if get_settings().metrics_port is not None:
        from orchestrator.ops import monitoring

        monitoring.forget_inherited()


@overload
def task(fn: F) -> Any: ...
@overload
def task(fn: None = None, **options: Any) -> Callable[[F], Any]: ...


def task(fn: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Register ``fn`` as a Celery task usable as a workflow step; Celery options pass through.

    ``@retry`` and ``@circuit_breaker`` applied below ``@task`` become the task's
    ``retry_policy`` and ``breaker``.
    """
    from orchestrator.engine.execution import StepTask

    def register(func: Callable[..., Any]) -> Any:
        extra = {k: getattr(func, k) for k in ("retry_policy", "breaker") if hasattr(func, k)}
        return get_app().task(base=StepTask, shared=True, lazy=False, **extra, **options)(func)

    return register(fn) if fn is not None else register


class CeleryCatalog:
    """Looks tasks up in a Celery app's registry (``spec.TaskCatalog``)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def signature_of(self, name: str) -> inspect.Signature | None:
        found: Task | None = self.app.tasks.get(name)
        if found is None:
            return None
        func = getattr(found, "__wrapped__", None) or found.run
        try:
            return inspect.signature(func)
        except (TypeError, ValueError):
            return inspect.Signature(
                [
                    inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                    inspect.Parameter("kw", inspect.Parameter.VAR_KEYWORD),
                ]
            )
