"""``celery -A orchestrator.worker worker|beat|flower``: the app with tasks and workflows loaded."""

from __future__ import annotations

from orchestrator.runtime import runtime

_rt = runtime()
app = _rt.app
_rt.load_modules()

__all__ = ["app"]
