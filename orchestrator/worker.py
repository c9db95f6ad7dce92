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
from typing import Any

import click
from celery import signals
from kombu import Exchange, Queue

from orchestrator.core import registry
from orchestrator.engine.runtime import runtime
from orchestrator.ops import forksafe
from orchestrator.ops import reconciler as recovery
from orchestrator.ops.periodic import install as install_schedules
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
_rt = runtime()
if flower_command():
    secure_flower(_rt.settings)
app = _rt.app
_rt.load_modules()
# without -Q a worker consumes the default queue and every queue a loaded workflow's steps name
app.conf.task_queues = [
    Queue(name, Exchange(name), routing_key=name)
    for name in sorted(
        {s.queue for w in registry.all_workflows() for s in w.steps if s.queue}
        | {app.conf.task_default_queue}
    )
]
install_schedules(app)  # beat's tasks, and one beat entry per workflow schedule


@signals.worker_init.connect(weak=False)
def _prepare_main_process(**_: Any) -> None:
    # before the pool forks and before any thread of ours starts (orchestrator.ops.forksafe)
    forksafe.prepare(_rt)


@signals.worker_ready.connect(weak=False)
def _start_reconciler(**_: Any) -> None:
    recovery.start()


@signals.worker_ready.connect(weak=False)
def _check_redis(**_: Any) -> None:
    # in the main process, once: warn when Redis may evict run state (maxmemory-policy)
    check_eviction_policies(_rt.settings)


@signals.worker_shutdown.connect(weak=False)
def _stop_reconciler(**_: Any) -> None:
    recovery.stop()


__all__ = ["app"]
