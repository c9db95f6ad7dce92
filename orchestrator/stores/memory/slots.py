"""The in-memory twin of ``stores.redis.slots``: concurrency slots in this process.

The same rules as the Lua scripts, under a lock: holders ordered by when they got a slot,
the line by when each run asked, waiting runs taking free slots in line order.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

from orchestrator.core.concurrency import Admission


@dataclass
class _Slot:
    held: dict[str, int] = field(default_factory=dict)  # run -> order it got the slot
    since: dict[str, float] = field(default_factory=dict)  # run -> when it got the slot
    wait: dict[str, int] = field(default_factory=dict)  # run -> order it asked
    limit: int = 0

    def promote(self, order: itertools.count[int]) -> list[str]:
        out = []
        while len(self.held) < self.limit and self.wait:
            head = min(self.wait, key=self.wait.__getitem__)
            del self.wait[head]
            self.take(head, order)
            out.append(head)
        return out

    def take(self, run_id: str, order: itertools.count[int]) -> None:
        self.held.setdefault(run_id, next(order))
        self.since.setdefault(run_id, time.time())

    def drop(self, run_id: str) -> None:
        self.held.pop(run_id, None)
        self.since.pop(run_id, None)

    def oldest(self) -> str:
        return min(self.held, key=self.held.__getitem__)

    def position(self, run_id: str) -> int:
        return sorted(self.wait, key=self.wait.__getitem__).index(run_id) + 1


class MemorySlots:
    """Concurrency slots of one process (``orchestrator.testing``, unit tests)."""

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._intact = False

    def acquire(self, slot: str, run_id: str, limit: int, on_limit: str) -> Admission:
        with self._lock:
            s = self._slots.setdefault(slot, _Slot())
            s.limit = limit
            promoted = [r for r in s.promote(self._order) if r != run_id]
            if run_id in s.held:
                return Admission("started", held=len(s.held), promoted=tuple(promoted))
            if run_id in s.wait:
                return Admission("queued", s.position(run_id), len(s.held), (), tuple(promoted))
            evicted: list[str] = []
            if len(s.held) >= limit and on_limit == "queue":
                s.wait[run_id] = next(self._order)
                return Admission("queued", len(s.wait), len(s.held), (), tuple(promoted))
            if len(s.held) >= limit and on_limit == "cancel_newest":
                return Admission("rejected", 0, len(s.held), (), tuple(promoted))
            while len(s.held) >= limit:
                evicted.append(s.oldest())
                s.drop(evicted[-1])
            s.take(run_id, self._order)
            return Admission("started", 0, len(s.held), tuple(evicted), tuple(promoted))

    def release(self, slot: str, run_id: str) -> list[str]:
        with self._lock:
            s = self._slots.get(slot)
            if s is None:
                return []
            s.drop(run_id)
            s.wait.pop(run_id, None)
            promoted = s.promote(self._order)
            if not s.held and not s.wait:
                del self._slots[slot]
            return promoted

    def hold(self, slot: str, run_id: str, limit: int) -> None:
        with self._lock:
            s = self._slots.setdefault(slot, _Slot(limit=limit))
            s.wait.pop(run_id, None)
            s.take(run_id, self._order)

    def where(self, slot: str, run_id: str) -> tuple[str | None, int, int, int]:
        with self._lock:
            s = self._slots.get(slot) or _Slot()
            if run_id in s.held:
                return "held", 0, len(s.held), s.limit
            if run_id in s.wait:
                return "waiting", s.position(run_id), len(s.held), s.limit
            return None, 0, len(s.held), s.limit

    def line(self, slot: str) -> tuple[list[str], list[str]]:
        with self._lock:
            s = self._slots.get(slot) or _Slot()
            return sorted(s.held, key=s.held.__getitem__), sorted(s.wait, key=s.wait.__getitem__)

    def held_since(self, slot: str, before: float) -> list[str]:
        with self._lock:
            s = self._slots.get(slot) or _Slot()
            return [r for r in s.held if s.since[r] < before]

    def slots(self) -> list[str]:
        with self._lock:
            return sorted(self._slots)

    def intact(self) -> bool:
        return self._intact

    def mark_intact(self) -> None:
        self._intact = True

    def forget(self) -> None:
        """Lose every slot, as a Redis restart without persistence does (for tests)."""
        with self._lock:
            self._slots.clear()
            self._intact = False
