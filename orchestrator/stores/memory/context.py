"""Run contexts in this process: the twin of ``stores.redis.context``.

A ``set`` does under one lock what the Redis script does: checks the bound (keys and values in
bytes, after the change), writes the key and gives the change a version that only grows.
Nothing expires.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class MemoryRunContext:
    """The operations of :class:`~orchestrator.ports.RunContextStore`, in memory."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, str]] = defaultdict(dict)
        self._versions: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def set(
        self, run_id: str, key: str, encoded: str, max_bytes: int
    ) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            after = {**self._values[run_id], key: encoded}
            size = sum(len(k.encode()) + len(v.encode()) for k, v in after.items())
            if size > max_bytes:
                return None
            self._values[run_id] = after
            self._versions[run_id] += 1
            return self._versions[run_id], dict(after)

    def get(self, run_id: str, key: str) -> str | None:
        with self._lock:
            return self._values.get(run_id, {}).get(key)

    def values(self, run_id: str) -> dict[str, str] | None:
        with self._lock:
            found = self._values.get(run_id)
            return dict(found) if found else None

    def forget(self, run_id: str) -> None:
        """Drop a run's context, as Redis does when it expires (tests of the fallback)."""
        with self._lock:
            self._values.pop(run_id, None)
