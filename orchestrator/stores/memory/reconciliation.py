"""The reconciler's questions to the in-memory history: the twin of the queries of
``stores.postgres`` that find runs and steps left behind (settled, unpublished, suspect, orphaned,
stalled, late retries). Ages are measured on the history's ``clock``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.memory.rows import RunRow, StepRow, stored

_GOING = (RunStatus.PENDING, RunStatus.RUNNING)


class Reconciliation:
    """Queries over the runs and steps of a :class:`~.history.MemoryHistory`."""

    clock: Callable[[], datetime]
    lock: threading.RLock
    runs: dict[str, RunRow]

    def _before(self, seconds: float) -> datetime:
        return self.clock() - timedelta(seconds=seconds)

    def _steps(self, status: tuple[RunStatus, ...]) -> list[tuple[RunRow, StepRow]]:
        return [(r, s) for r in self.runs.values() if r.status in status for s in r.steps.values()]

    def settled_runs(self, limit: int = 100) -> list[tuple[str, RunStatus]]:
        """Unfinished runs whose steps have all ended, with the status the run should have."""
        found = []
        with self.lock:
            for row in self.runs.values():
                steps = [s.status for s in row.steps.values()]
                if row.ended or not steps or not all(s.terminal for s in steps):
                    continue
                if all(s in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in steps):
                    found.append((row.id, RunStatus.SUCCEEDED))
                elif StepStatus.FAILED in steps:
                    found.append((row.id, RunStatus.FAILED))
                else:
                    found.append((row.id, RunStatus.CANCELLED))
        return found[:limit]

    def finish_settled(
        self, run_id: str, status: RunStatus, output: Any, error: str | None
    ) -> bool:
        with self.lock:
            row = self.runs.get(run_id)
            if row is None or row.ended:
                return False
            row.status, row.output, row.error = status, stored(output), error
            row.finished_at = self.clock()
        return True

    def unpublished_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Pending runs recorded over ``older_than`` seconds ago and never published, oldest
        first."""
        with self.lock:
            before = self._before(older_than)
            rows = [
                r
                for r in self.runs.values()
                if r.published_at is None
                and r.status == RunStatus.PENDING
                and r.created_at < before
            ]
            return [r.id for r in sorted(rows, key=lambda r: r.created_at)][:limit]

    def suspect_steps(self, older_than: float, limit: int = 500) -> list[tuple[str, str, int]]:
        """Steps recorded as running for longer than ``older_than`` seconds, in running runs."""
        with self.lock:
            return self._running_since(self._before(older_than), (RunStatus.RUNNING,))[:limit]

    def orphaned_steps(self, older_than: float, limit: int = 100) -> list[tuple[str, str, int]]:
        """Steps recorded as running for longer than ``older_than`` seconds in runs that ended."""
        ended = tuple(s for s in RunStatus if s.terminal)
        with self.lock:
            return self._running_since(self._before(older_than), ended)[:limit]

    def _running_since(
        self, before: datetime, status: tuple[RunStatus, ...]
    ) -> list[tuple[str, str, int]]:
        return [
            (r.id, s.step_id, s.attempts)
            for r, s in self._steps(status)
            if s.status == StepStatus.RUNNING and s.started_at is not None and s.started_at < before
        ]

    def fail_orphan(self, run_id: str, step_id: str, error: str) -> bool:
        """End an orphaned running step as failed; False if it had ended meanwhile."""
        with self.lock:
            row = self.runs.get(str(run_id))
            step = None if row is None else row.steps.get(step_id)
            if step is None or step.status != StepStatus.RUNNING:
                return False
            step.status, step.error, step.finished_at = StepStatus.FAILED, error, self.clock()
        return True

    def output_written_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Unfinished runs whose output was written over ``older_than`` seconds ago."""
        with self.lock:
            before = self._before(older_than)
            found = [
                r.id
                for r in self.runs.values()
                if not r.status.terminal and r.finished_at is not None and r.finished_at < before
            ]
        return found[:limit]

    def stalled_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Published, going runs with a pending step, nothing running or retrying, and no step
        start or end for ``older_than`` seconds."""
        with self.lock:
            before = self._before(older_than)
            found = [
                r.id
                for r in self.runs.values()
                if r.status in _GOING
                and r.published_at is not None
                and r.published_at < before
                and _stalled(list(r.steps.values()), before)
            ]
        return random.sample(found, min(limit, len(found)))

    def late_retries(self, older_than: float, limit: int = 500) -> list[tuple[str, str, int]]:
        """Steps ``retrying`` for longer than ``older_than`` seconds (since the failed attempt
        ended), in pending or running runs: (run id, step id, attempts)."""
        with self.lock:
            before = self._before(older_than)
            return [
                (r.id, s.step_id, s.attempts)
                for r, s in self._steps(_GOING)
                if s.status == StepStatus.RETRYING
                and s.finished_at is not None
                and s.finished_at < before
            ][:limit]


def _stalled(steps: list[StepRow], before: datetime) -> bool:
    statuses = {s.status for s in steps}
    if StepStatus.PENDING not in statuses or statuses & {StepStatus.RUNNING, StepStatus.RETRYING}:
        return False
    # PostgreSQL's greatest() of a step's start and end ignores the one that is NULL
    moved = [max(filter(None, (s.started_at, s.finished_at)), default=None) for s in steps]
    return not any(t is not None and t >= before for t in moved)
