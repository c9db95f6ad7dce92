"""``celery -A orchestrator.worker worker|beat|flower``: the app with tasks and workflows loaded."""

from __future__ import annotations

from typing import Any

from celery import signals

from orchestrator import recovery
from orchestrator.runtime import runtime

_rt = runtime()
app = _rt.app
_rt.load_modules()



@signals.worker_ready.connect(weak=False)
def _start_reconciler(**_: Any) -> None:
    recovery.start()


@signals.worker_shutdown.connect(weak=False)
def _stop_reconciler(**_: Any) -> None:
    recovery.stop()


__all__ = ["app"]
