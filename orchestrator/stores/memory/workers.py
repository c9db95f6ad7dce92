"""The registry of workers in this process: the twin of ``stores.redis.workers``.

Heartbeats are kept on the injectable ``clock``: a worker silent for longer than ``lost_after``
is listed ``lost``; one silent for longer than what its last heartbeat asked to be kept
(``keep``) is dropped, as its Redis key would expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

from orchestrator.records import WorkerInfo


class MemoryWorkers:
    """The operations of :class:`~orchestrator.ports.WorkerStore`, in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: dict[str, tuple[WorkerInfo, float, float]] = {}  # info, written, keep
        self._lock = threading.Lock()

    def publish(self, info: WorkerInfo, keep: float) -> None:
        with self._lock:
            self._entries[info.name] = (info, self.clock(), keep)

    def remove(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def workers(self, lost_after: float) -> list[WorkerInfo]:
        now = self.clock()
        with self._lock:
            for name, (_, written, keep) in list(self._entries.items()):
                if now - written > keep:
                    del self._entries[name]
            found = list(self._entries.values())
        return sorted(
            (
                replace(info, lost=now - written > lost_after, silent_for=now - written)
                for info, written, _ in found
            ),
            key=lambda w: w.name,
        )
