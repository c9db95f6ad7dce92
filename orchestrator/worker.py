"""``celery -A orchestrator.worker worker|beat|flower``: the app with tasks and workflows loaded."""

from __future__ import annotations

from typing import Any

from celery import signals
from kombu import Exchange, Queue

from orchestrator import recovery, registry
from orchestrator.periodic import install as install_schedules
from orchestrator.runtime import runtime

_rt = runtime()
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


@signals.worker_ready.connect(weak=False)
def _start_reconciler(**_: Any) -> None:
    recovery.start()


@signals.worker_shutdown.connect(weak=False)
def _stop_reconciler(**_: Any) -> None:
    recovery.stop()


__all__ = ["app"]
