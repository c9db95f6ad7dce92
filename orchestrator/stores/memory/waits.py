"""Sleeping and waiting steps and signals in this process: the twin of
``stores.postgres.waits`` (the ``WaitStore`` port), over the in-memory history's runs."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from orchestrator.codec import decode, encode
from orchestrator.records import ParkedStep, SignalRecord
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.memory.history import MemoryHistory

WAKEABLE = (RunStatus.PENDING, RunStatus.RUNNING)


class MemoryWaits:
    """Parked steps and signals in dicts, under the history's lock."""

    def __init__(self, history: MemoryHistory) -> None:
        self.history = history
        self._parked: dict[tuple[str, str], ParkedStep] = {}
        self._signals: list[SignalRecord] = []
        self._ids = itertools.count(1)

    def park(
        self,
        run_id: str,
        step_id: str,
        signal: str | None,
        due: float | None,
        message: dict[str, Any],
    ) -> float | None:
        with self.history.lock:
            before = self._parked.get((run_id, step_id))
            kept = due if before is None else before.due
            self._parked[(run_id, step_id)] = ParkedStep(run_id, step_id, signal, kept, message)
            return kept

    def unpark(self, run_id: str, step_id: str) -> None:
        with self.history.lock:
            self._parked.pop((run_id, step_id), None)

    def parked(self, run_id: str) -> list[ParkedStep]:
        with self.history.lock:
            return [p for p in self._parked.values() if p.run_id == run_id]

    def waiting_for_signal(self, run_id: str, name: str) -> list[ParkedStep]:
        return [p for p in self.parked(run_id) if p.signal == name]

    def due_waits(self, cutoff: float, limit: int = 500) -> list[ParkedStep]:
        with self.history.lock:
            found = []
            for parked in self._parked.values():
                run = self.history.runs.get(parked.run_id)
                if run is None or run.status not in WAKEABLE:
                    continue
                arrived = any(
                    s.run_id == parked.run_id and s.name == parked.signal and _at(s) <= cutoff
                    for s in self._signals
                )
                if (parked.due is not None and parked.due <= cutoff) or arrived:
                    found.append(parked)
            return found[:limit]

    def end_waits(self, run_id: str, reason: str) -> list[str]:
        with self.history.lock:
            ids = [step for (run, step) in self._parked if run == run_id]
            run = self.history.runs.get(run_id)
            for step_id in ids:
                del self._parked[(run_id, step_id)]
                row = run.steps.get(step_id) if run is not None else None
                if row is not None and row.status == StepStatus.RUNNING:
                    row.status, row.error = StepStatus.CANCELLED, reason
                    row.finished_at = self.history.clock()
            return ids

    def skip_parked(self, run_id: str, step_id: str, reason: str) -> bool:
        with self.history.lock:
            self._parked.pop((run_id, step_id), None)
            run = self.history.runs.get(run_id)
            row = run.steps.get(step_id) if run is not None else None
            if row is None or row.status != StepStatus.RUNNING:
                return False
            row.status, row.error = StepStatus.SKIPPED, reason
            row.finished_at = self.history.clock()
            return True

    def add_signal(
        self, run_id: str, name: str, payload: Any, sender: str | None, size: int
    ) -> SignalRecord | None:
        with self.history.lock:
            run = self.history.runs.get(run_id)
            if run is None or run.status.terminal:
                return None
            record = SignalRecord(
                next(self._ids),
                run_id,
                name,
                decode(encode(payload)),  # as JSONB would hold it
                sender,
                size,
                self.history.clock(),
            )
            self._signals.append(record)
            return record

    def signals(self, run_id: str, name: str | None = None) -> list[SignalRecord]:
        with self.history.lock:
            return [
                s for s in self._signals if s.run_id == run_id and (name is None or s.name == name)
            ]


def _at(signal: SignalRecord) -> float:
    at: datetime = signal.at
    return at.timestamp()
