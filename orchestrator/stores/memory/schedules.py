"""Schedule control in memory: the twin of ``stores.postgres.schedules`` (each workflow's pause
flag and the last fire time handled, which only moves forward)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from orchestrator.records import ScheduleState


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return a if b is None else b if a is None else max(a, b)


class ScheduleStates:
    """The schedule-control methods of :class:`~.history.MemoryHistory`."""

    lock: threading.RLock
    clock: Callable[[], datetime]
    _keys: dict[str, str]
    schedules: dict[str, ScheduleState]

    def schedule_states(self) -> dict[str, ScheduleState]:
        with self.lock:
            return dict(self.schedules)

    def schedule_state(self, workflow: str) -> ScheduleState:
        with self.lock:
            return self.schedules.get(workflow) or ScheduleState(workflow)

    def record_fire(self, workflow: str, fire_time: datetime) -> None:
        with self.lock:
            old = self.schedule_state(workflow)
            last = _later(old.last_fire_time, fire_time)
            self.schedules[workflow] = replace(old, last_fire_time=last, updated_at=self.clock())

    def set_schedule_paused(
        self, workflow: str, paused: bool, handled_until: datetime | None = None
    ) -> ScheduleState:
        with self.lock:
            old = self.schedule_state(workflow)
            last = _later(old.last_fire_time, handled_until)
            new = replace(old, paused=paused, last_fire_time=last, updated_at=self.clock())
            self.schedules[workflow] = new
            return new

    def runs_by_key(self, keys: list[str]) -> dict[str, str]:
        with self.lock:
            return {k: self._keys[k] for k in keys if k in self._keys}
