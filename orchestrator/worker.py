"""``celery -A orchestrator.worker worker|beat|flower``: the app with tasks and workflows loaded.

Loaded by ``celery ... flower``, it makes Flower safe without ``--conf=config/flowerconfig.py``
(Flower reads ``flowerconfig.py`` only from the current directory or ``--conf``, and otherwise
serves every interface with no authentication): it binds 127.0.0.1 and requires
``ORCHESTRATOR_FLOWER_BASIC_AUTH``, as ``config/flowerconfig.py`` does. Flower's config file,
``FLOWER_*`` variables and command-line flags (``--address``, ``--port``) still win. Workers
send no task events unless told (``-E``, ``ORCHESTRATOR_TASK_EVENTS``), as Celery's default;
Flower turns them on in the workers it watches, and this turns them on in the running ones at
once.

A workflow file that is not valid is logged and skipped (``orchestrator.core.registry``); a task
module that cannot be imported stops the worker with a one-line reason. While it runs, the
worker's entry in the registry of live workers (``orchestrator.ops.workers``) says which queues
it consumes and which tasks it registered, so ``orchestrator run`` and ``show`` can tell when no
worker would run a step. A message for a task this worker has not registered is dead-lettered
with its run and step, and fails that step and its run at once (Celery drops such a message).
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

import click
from celery import signals
from kombu import Exchange, Queue

from orchestrator.app import get_app
from orchestrator.core import registry
from orchestrator.engine.canvas import CTX_KEY
from orchestrator.engine.failure import fail_run
from orchestrator.engine.services import Services, services_of
from orchestrator.logs import configure
from orchestrator.ops import forksafe, monitoring, pool_guard
from orchestrator.ops.delays import DelayPump
from orchestrator.ops.periodic import install as install_schedules
from orchestrator.ops.reconciler import Reconciler
from orchestrator.ops.workers import Heartbeat, describe
from orchestrator.records import DeadLetterEvent, StepEvent
from orchestrator.settings import Settings
from orchestrator.status import StepStatus
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


def enable_task_events(celery_app: Any) -> None:
    """Turn on task events in the workers running now: Flower turns them on in the workers it
    watches, but first after 5 s (workers started later get them that way)."""
    try:
        celery_app.control.enable_events()
    except Exception as exc:  # the broker is away: Flower's own timer tries again
        print(f"orchestrator: could not turn on the workers' task events ({exc})", file=sys.stderr)


def load_modules(services: Services) -> None:
    """Import the task modules and load the workflows, or exit with why (no traceback)."""
    try:
        services.load_modules()
    except Exception as exc:  # an ImportError, a SyntaxError in a task module, ...
        reason = "".join(traceback.format_exception_only(exc)).strip()
        sys.exit(
            f"orchestrator: importing the task modules failed ({reason}); ORCHESTRATOR_TASK_MODULES"
            f"={','.join(services.settings.task_modules)}"
        )


kombu_fixes.install()  # a worker survives a Redis restart
pool_guard.install()  # ... also when a pool process exits as it reconnects
app = get_app()
services = services_of(app)
if flower_command():
    secure_flower(services.settings)
    enable_task_events(app)
load_modules(services)
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
    """The threads of the worker's main process: the reconciler, the delay pump and the
    heartbeat of its entry among the live workers."""

    def __init__(self) -> None:
        self.reconciler: Reconciler | None = None
        self.pump: DelayPump | None = None
        self.heartbeat: Heartbeat | None = None

    def start(self, consumer: Any) -> None:
        self.reconciler = Reconciler(services)
        self.reconciler.start()
        self.pump = DelayPump(services.delays, lambda m: app.signature(m).apply_async())
        self.pump.start()
        if consumer is not None:
            began = time.time()
            self.heartbeat = Heartbeat(services.workers, lambda: describe(consumer, began))
            self.heartbeat.start()

    def stop(self) -> None:
        for thread in (self.heartbeat, self.reconciler, self.pump):
            if thread is not None:
                thread.stop()


main_process = MainProcess()


@signals.worker_init.connect(weak=False)
def _prepare_main_process(**_: Any) -> None:
    # before the pool forks and before any thread of ours starts (orchestrator.ops.forksafe)
    forksafe.prepare(services)


@signals.worker_ready.connect(weak=False)
def _start(sender: Any = None, **_: Any) -> None:
    main_process.start(sender)
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
    sender: Any = None,
    name: str | None = None,
    id: str | None = None,
    message: Any = None,
    **_: Any,
) -> None:
    """A message for a task no module registered becomes a dead letter (Celery drops it); a
    step's fails the step and its run at once, naming the task, this worker and the queue."""
    args, kwargs = _arguments(message)
    ctx = kwargs.get(CTX_KEY) if isinstance(kwargs, dict) else None
    step = ctx if isinstance(ctx, dict) and "run_id" in ctx and "step_id" in ctx else {}
    worker = getattr(sender, "hostname", None) or "this worker"
    queue = (getattr(message, "delivery_info", None) or {}).get("routing_key") or "?"
    error = (
        f"task {name!r} is not registered on worker {worker} (queue {queue!r}); add its module "
        "to the worker's ORCHESTRATOR_TASK_MODULES and restart it"
    )
    if step:
        error += f", then `orchestrator retry {step['run_id']}`"
    services.writer.submit(
        DeadLetterEvent(
            task=name or "?",
            reason="unregistered",
            at=datetime.now(UTC),
            run_id=step.get("run_id"),
            step_id=step.get("step_id"),
            celery_task_id=id,
            args=args,
            kwargs=kwargs,
            error=error,
        )
    )
    if step and services.state.failure(step["run_id"]) is None:
        attempt = int(step.get("attempt", 1))
        services.writer.submit(
            StepEvent(
                step["run_id"],
                step["step_id"],
                attempt,
                StepStatus.FAILED,
                datetime.now(UTC),
                worker=worker,
                error=error,
            )
        )
        fail_run(services, step["run_id"], step["step_id"], error)


def _arguments(message: Any) -> tuple[Any, Any]:
    try:
        body = message.decode()
    except Exception:
        return None, None
    if isinstance(body, list | tuple) and len(body) >= 2:
        return body[0], body[1]
    return None, None


__all__ = ["app"]
