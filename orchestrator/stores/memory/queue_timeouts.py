"""Step messages waiting under a ``queue_timeout``, in this process: the twin of
``stores.redis.queue_timeouts`` (one entry per member, due earliest first, taken once)."""

from __future__ import annotations

import threading


class MemoryQueueTimeouts:
    """The in-memory adapter of ``ports.QueueTimeoutStore``."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._lock = threading.Lock()

    def expect(self, member: str, due: float) -> None:
        with self._lock:
            self._due[member] = due

    def received(self, member: str) -> None:
        with self._lock:
            self._due.pop(member, None)

    def due(self, now: float, limit: int = 100) -> list[tuple[str, float]]:
        with self._lock:
            return sorted(
                ((m, at) for m, at in self._due.items() if at <= now), key=lambda e: e[1]
            )[:limit]

    def take(self, member: str) -> bool:
        with self._lock:
            return self._due.pop(member, None) is not None
