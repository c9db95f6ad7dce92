"""``celery -A orchestrator.worker worker|beat|flower``: the app with tasks and workflows loaded.

Loaded by ``celery ... flower``, it makes Flower safe without ``--conf=config/flowerconfig.py``
(Flower reads ``flowerconfig.py`` only from the current directory or ``--conf``, and otherwise
serves every interface with no authentication): it binds 127.0.0.1 and requires
``ORCHESTRATOR_FLOWER_BASIC_AUTH``, as ``config/flowerconfig.py`` does. Flower's config file,
``FLOWER_*`` variables and command-line flags (``--address``, ``--port``) still win.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime
from typing import Any

import click
from celery import signals
from kombu import Exchange, Queue

from orchestrator.app import get_app
from orchestrator.core import registry
from orchestrator.engine.services import services_of
from orchestrator.logs import configure
from orchestrator.ops import forksafe, monitoring
from orchestrator.ops.delays import DelayPump
from orchestrator.ops.periodic import install as install_schedules
from orchestrator.ops.reconciler import Reconciler
from orchestrator.records import DeadLetterEvent
from orchestrator.settings import Settings
from orchestrator.stores.redis import kombu_fixes
from orchestrator.stores.redis.checks import check_eviction_policies

FLOWER_AUTH_VAR = "ORCHESTRATOR_FLOWER_BASIC_AUTH"
FLOWER_HOW_TO = (
    f"set it as user:password, e.g. export {FLOWER_AUTH_VAR}=admin:$(openssl rand -hex 16)"
)


def flower_command() -> bool:
    """Whether Celery's command line is loading this app for its ``flower`` subcommand."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if "flower" in (ctx.invoked_subcommand, ctx.info_name):
            return True
        ctx = ctx.parent
    return False


def flower_basic_auth(value: str) -> str:
    """``value`` if it is ``user:password``; else exit with a one-line message (not echoing it)."""
    user, colon, password = value.partition(":")
    if user and colon and password:
        return value
    problem = (
        "is not set or empty"
        if not value
        else "is not user:password (a user, a colon, a non-empty password)"
    )
    sys.exit(f"Flower refuses to start: {FLOWER_AUTH_VAR} {problem}; {FLOWER_HOW_TO}")


def secure_flower(settings: Settings) -> None:
    """Flower's defaults for this process: 127.0.0.1 and HTTP basic auth, or exit."""
    secret = settings.flower_basic_auth
    credentials = flower_basic_auth(secret.get_secret_value() if secret is not None else "")
    importlib.import_module("flower.options")  # defines Flower's options (address, basic_auth)
    options = importlib.import_module("tornado.options").options
    options.address = "127.0.0.1"
    options.basic_auth = [credentials]  # a list: Flower would split a string on commas


kombu_fixes.install()  # a worker survives a Redis restart
app = get_app()
services = services_of(app)
if flower_command():
    secure_flower(services.settings)
services.load_modules()
# without -Q a worker consumes the default queue and every queue a loaded workflow's steps name
app.conf.task_queues = [
    Queue(name, Exchange(name), routing_key=name)
    for name in sorted(
        {s.queue for w in registry.all_workflows() for s in w.steps if s.queue}
        | {app.conf.task_default_queue}
    )
]
install_schedules(app, services.settings)  # beat's tasks, and one beat entry per workflow schedule


class MainProcess:
    """The threads of the worker's main process: the reconciler and the delay pump."""

    def __init__(self) -> None:
        self.reconciler: Reconciler | None = None
        self.pump: DelayPump | None = None

    def start(self) -> None:
        self.reconciler = Reconciler(services)
        self.reconciler.start()
        self.pump = DelayPump(services.delays, lambda m: app.signature(m).apply_async())
        self.pump.start()

    def stop(self) -> None:
        for thread in (self.reconciler, self.pump):
            if thread is not None:
                thread.stop()


main_process = MainProcess()


@signals.worker_init.connect(weak=False)
def _prepare_main_process(**_: Any) -> None:
    # before the pool forks and before any thread of ours starts (orchestrator.ops.forksafe)
    forksafe.prepare(services)


@signals.worker_ready.connect(weak=False)
def _start(sender: Any = None, **_: Any) -> None:
    main_process.start()
    # in the main process, once: warn when Redis may evict run state (maxmemory-policy)
    check_eviction_policies(services.settings)
    if services.settings.metrics_port is not None:
        monitoring.start(app, services.settings, services.settings.metrics_host)


@signals.worker_shutdown.connect(weak=False)
def _stop(**_: Any) -> None:
    main_process.stop()
    if services.settings.metrics_port is not None:
        monitoring.stop()


@signals.worker_process_init.connect(weak=False)
def _child(**_: Any) -> None:
    if services.settings.metrics_port is not None:
        monitoring.forget_inherited()


@signals.after_setup_logger.connect(weak=False)
@signals.after_setup_task_logger.connect(weak=False)
def _setup_logs(logger: Any = None, **_: Any) -> None:
    configure(logger, services.settings.log_format)


@signals.task_unknown.connect(weak=False)
def _unknown_task(
    name: str | None = None, id: str | None = None, message: Any = None, **_: Any
) -> None:
    """A message for a task no module registered becomes a dead letter (it is not redelivered)."""
    args, kwargs = _arguments(message)
    services.writer.submit(
        DeadLetterEvent(
            task=name or "?",
            reason="unregistered",
            at=datetime.now(UTC),
            celery_task_id=id,
            args=args,
            kwargs=kwargs,
            error=f"task {name!r} is not registered on this worker; add its module to "
            "ORCHESTRATOR_TASK_MODULES",
        )
    )


def _arguments(message: Any) -> tuple[Any, Any]:
    try:
        body = message.decode()
    except Exception:
        return None, None
    if isinstance(body, list | tuple) and len(body) >= 2:
        return body[0], body[1]
    return None, None


__all__ = ["app"]
