"""Rate limits in this process only: the twin of ``stores.redis.rate_limits``.

The same sliding window (:func:`orchestrator.core.rate_limits.slide`) under a lock; the clock
is injectable, so a test (or ``run_inline``, whose clock skips waits) decides when a window
has room again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from orchestrator.core.breaker import Clock
from orchestrator.core.rate_limits import next_start, slide


class MemoryRateLimits:
    """Start times per key (with the member that counted each), and deferrals per key."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.windows: dict[str, list[tuple[float, str]]] = {}
        self.deferred: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, key: str, limit: int, period: float, member: str) -> float:
        with self._lock:
            now = self.clock()
            kept = [(at, m) for at, m in self.windows.get(key, []) if at > now - period]
            wait, _ = slide([at for at, _ in kept], now, limit, period)
            if wait:
                self.deferred[key] += 1
            else:
                kept.append((now, member))
            self.windows[key] = kept
            return wait

    def release(self, key: str, member: str) -> None:
        with self._lock:
            self.windows[key] = [(at, m) for at, m in self.windows.get(key, []) if m != member]

    def next_start(self, key: str, limit: int, period: float) -> float:
        with self._lock:
            starts = [at for at, _ in self.windows.get(key, [])]
        return next_start(starts, self.clock(), limit, period)

    def deferrals(self) -> dict[str, int]:
        with self._lock:
            return dict(self.deferred)

    def starts(self, key: str) -> list[float]:
        """The start times counted for ``key`` that are still kept, oldest first."""
        with self._lock:
            return [at for at, _ in self.windows.get(key, [])]
