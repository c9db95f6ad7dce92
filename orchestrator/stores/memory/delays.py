"""Messages held back until due, in this process: the twin of ``stores.redis.delays``.

As in Redis's sorted set, a message is kept once (adding it again moves its due time) and each
due message is taken by exactly one caller.
"""

from __future__ import annotations

import threading
from typing import Any

from orchestrator.codec import decode, encode


class MemoryDelays:
    """A schedule of signatures to publish later."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}  # encoded signature -> due time
        self._lock = threading.Lock()

    def add(self, signature: dict[str, Any], due: float) -> None:
        with self._lock:
            self._due[encode(signature)] = due

    def take_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Due messages, earliest first; each is returned to one caller only."""
        with self._lock:
            due = sorted((at, raw) for raw, at in self._due.items() if at <= now)[:limit]
            for _, raw in due:
                del self._due[raw]
        return [decode(raw) for _, raw in due]

    def size(self) -> int:
        with self._lock:
            return len(self._due)

    def next_due(self) -> float | None:
        """When the earliest message is due (None when there is none): how far a harness that
        skips waiting moves its clock."""
        with self._lock:
            return min(self._due.values(), default=None)
