"""Run contexts in the in-memory history: the twin of ``stores.postgres.context``.

A run row takes a context whose version is higher than the last one it took, merged over
what it holds (:meth:`Contexts.keep_context`,
applied by the memory writer), and gives it back decoded (:meth:`Contexts.run_context`).
"""

from __future__ import annotations

import threading
from typing import Any

from orchestrator.codec import decode
from orchestrator.records import ContextEvent
from orchestrator.stores.memory.rows import RunRow


class Contexts:
    """The context column of the runs of a :class:`~.history.MemoryHistory`."""

    lock: threading.RLock
    runs: dict[str, RunRow]

    def keep_context(self, event: ContextEvent) -> None:
        """Keep ``event``'s context unless the row holds a later one (call under the lock)."""
        row = self.runs.get(event.run_id)
        if row is not None and row.context_version < event.version:
            row.context = {**(row.context or {}), **event.context}
            row.context_version = event.version

    def run_context(self, run_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.runs.get(run_id)
            if row is None or row.context is None:
                return None
            return {k: decode(v) for k, v in row.context.items()}
