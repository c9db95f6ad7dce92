"""Circuit breakers in this process only: the twin of ``stores.redis.breakers``.

The same transitions (:class:`~orchestrator.core.breaker.BreakerTransitions`) under a lock, so
concurrent callers still get one half-open trial; the clock is injectable, so a test (or
``orchestrator.testing``) decides when a breaker's reset timeout has passed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from orchestrator.core.breaker import (
    TRANSITIONS_KEPT,
    BreakerState,
    BreakerTransitions,
    Change,
    Clock,
)


class MemoryBreakerStore(BreakerTransitions):
    """Breakers of this process, with the transitions of each kept, oldest first."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.states: dict[str, BreakerState] = {}
        self.transitions: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _apply(self, name: str, change: Change) -> Any:
        with self._lock:
            old = self.states.get(name, BreakerState())
            new, result = change(old)
            self.states[name] = new
            kept = self.transitions.setdefault(name, [])
            if (note := self._note(name, old, new)) is not None:
                kept.append(note)
                del kept[:-TRANSITIONS_KEPT]
            return result

    def get(self, name: str) -> BreakerState:
        with self._lock:
            return self.states.get(name, BreakerState())

    def names(self) -> list[str]:
        """Every breaker a call asked or reported to (also after a reset)."""
        with self._lock:
            return sorted(self.transitions)

    def history(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        """The breaker's latest transitions, newest first."""
        with self._lock:
            return list(reversed(self.transitions.get(name, [])))[:limit]

    def reset(self, name: str) -> None:
        """Close the breaker (its transitions are kept)."""
        with self._lock:
            self.states.pop(name, None)
