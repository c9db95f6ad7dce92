"""Run history in this process: the twin of ``stores.postgres`` (the history store).

Runs, steps, attempts, events and dead letters are rows in dicts (:mod:`.rows`) under one lock.
Every status change is conditional as in the SQL it stands for: a run or step that has ended never
changes again, except that a step presumed not started (``skipped``, ``cancelled``) records how it
really ended.
The reconciler's questions are answered in :mod:`.reconciliation`, the console's in
:mod:`.listing`; the batched writer's events are applied by
:class:`~orchestrator.stores.memory.writer.MemoryWriter`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from orchestrator.records import (
    DeadLetterRecord,
    NewRun,
    NewStep,
    RunRecord,
    ScheduledRun,
    ScheduleState,
    StepRecord,
)
from orchestrator.status import RunStatus, StepStatus, Trigger
from orchestrator.stores.memory.contexts import Contexts
from orchestrator.stores.memory.listing import Listing
from orchestrator.stores.memory.reconciliation import Reconciliation
from orchestrator.stores.memory.rows import RunRow, StepRow, stored
from orchestrator.stores.memory.schedules import ScheduleStates

Now = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MemoryHistory(Reconciliation, Listing, ScheduleStates, Contexts):
    """The :class:`~orchestrator.ports.RunHistory` operations, on rows in memory."""

    def __init__(self, clock: Now = utc_now) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.runs: dict[str, RunRow] = {}
        self.specs: dict[str, dict[str, Any]] = {}
        self.letters: dict[int, DeadLetterRecord] = {}
        self._letter_ids = itertools.count(1)
        self._keys: dict[str, str] = {}  # idempotency key -> run id
        self._schedule_locks: dict[str, threading.Lock] = {}
        self.schedules: dict[str, ScheduleState] = {}  # workflow -> pause flag, last fire

    def ping(self) -> None:
        """Always reachable."""

    def load_spec(self, version: str) -> dict[str, Any] | None:
        with self.lock:
            return self.specs.get(version)

    # -- submit and read

    def create_run(self, run: NewRun, steps: list[NewStep]) -> tuple[str, bool]:
        """Record the run and its steps; with an idempotency key already taken, nothing is
        written and the existing run's id is returned with ``created=False``."""
        with self.lock:
            if run.idempotency_key is not None and run.idempotency_key in self._keys:
                return self._keys[run.idempotency_key], False
            self.specs.setdefault(run.version, run.spec)
            at = self.clock()
            row = RunRow(
                id=run.id,
                workflow=run.workflow,
                workflow_version=run.version,
                inputs=stored(run.inputs),
                trigger=run.trigger,
                created_at=at,
                idempotency_key=run.idempotency_key,
                correlation_id=run.correlation_id,
                tenant_id=run.tenant_id,
                parent_run_id=run.parent_run_id,
                parent_step_id=run.parent_step_id,
                priority=run.priority,
                done_steps=list(run.done_steps),
                published_at=at if run.published else None,
            )
            self._add_steps(row, steps, at)
            self.runs[run.id] = row
            if run.idempotency_key is not None:
                self._keys[run.idempotency_key] = run.id
        return run.id, True

    def add_steps(self, run_id: str, steps: list[NewStep]) -> None:
        """Add step rows to a run (the items of a ``for_each``); rows it has are kept."""
        with self.lock:
            row = self.runs.get(run_id)
            if row is not None:
                self._add_steps(row, steps, self.clock())

    @staticmethod
    def _add_steps(row: RunRow, steps: list[NewStep], at: datetime) -> None:
        for step in steps:
            if step.step_id in row.steps:
                continue
            row.steps[step.step_id] = StepRow(
                step_id=step.step_id,
                task_name=step.task_name,
                celery_task_id=step.celery_task_id,
                status=StepStatus(step.status),
                queued_at=at,
                result=stored(step.result) if step.has_result else None,
                finished_at=at if step.status != StepStatus.PENDING else None,
            )

    def get_run(self, run_id: str) -> RunRecord | None:
        with self.lock:
            row = self.runs.get(str(run_id))
            return None if row is None else row.record()

    def list_runs(
        self, workflow: str | None = None, status: RunStatus | None = None, limit: int = 50
    ) -> list[RunRecord]:
        """Newest first, optionally of one workflow and/or status."""
        with self.lock:
            rows = [
                r
                for r in self.runs.values()
                if (not workflow or r.workflow == workflow) and (not status or r.status == status)
            ]
            rows.sort(key=lambda r: r.created_at, reverse=True)
            return [r.record() for r in rows[:limit]]

    def children(self, run_id: str) -> list[RunRecord]:
        """The runs of child workflows that steps of ``run_id`` started, oldest first."""
        with self.lock:
            rows = [
                r
                for r in self.runs.values()
                if r.parent_run_id == str(run_id) and r.parent_step_id is not None
            ]
            rows.sort(key=lambda r: r.created_at)
            return [r.record() for r in rows]

    def get_steps(self, run_id: str) -> list[StepRecord]:
        with self.lock:
            row = self.runs.get(str(run_id))
            return [] if row is None else [s.record() for s in row.steps.values()]

    def events(self, run_id: str) -> list[tuple[datetime, str, str | None]]:
        with self.lock:
            row = self.runs.get(str(run_id))
            return [] if row is None else list(row.events)

    def unfinished_task_ids(self, run_id: str) -> list[str]:
        with self.lock:
            row = self.runs.get(str(run_id))
            steps = [] if row is None else row.steps.values()
            return [s.celery_task_id for s in steps if not s.status.terminal]

    # -- control

    def cancel_run(self, run_id: str, reason: str) -> bool:
        """Cancel a run that has not ended: its unstarted steps become ``cancelled``."""
        return self.end_run(run_id, RunStatus.CANCELLED, reason, StepStatus.CANCELLED)

    def fail_run(
        self, run_id: str, error: str, unstarted: StepStatus = StepStatus.CANCELLED
    ) -> bool:
        """End a run as failed (e.g. its deadline passed); steps not started get ``unstarted``."""
        return self.end_run(run_id, RunStatus.FAILED, error, unstarted)

    def end_run(self, run_id: str, status: RunStatus, error: str, unstarted: StepStatus) -> bool:
        """End a run that has not ended; its unstarted steps get ``unstarted``. False if the
        run had already ended."""
        with self.lock:
            row = self.runs.get(str(run_id))
            if row is None or row.ended:
                return False
            at = self.clock()
            row.status, row.error, row.finished_at = status, error, at
            for step in row.waiting():
                step.status, step.error, step.finished_at = unstarted, error, at
        return True

    def end_failed(self, run_id: str, step_id: str | None, error: str) -> bool:
        """Fail a run whose failure was decided but not recorded: the failing step (if it has
        not ended) becomes ``failed``, steps not started ``skipped``. False if it had ended."""
        with self.lock:
            row = self.runs.get(str(run_id))
            step = None if row is None or step_id is None else row.steps.get(step_id)
            if step is not None and not step.status.terminal:
                step.status, step.error, step.finished_at = StepStatus.FAILED, error, self.clock()
            if row is None or not self.end_run(run_id, RunStatus.FAILED, error, StepStatus.SKIPPED):
                return False
            row.error_step = step_id
        return True

    def transition(
        self,
        run_id: str,
        source: tuple[RunStatus, ...],
        target: RunStatus,
        effect: Callable[[], None] | None = None,
    ) -> bool:
        """Move a run from one of ``source`` to ``target``; False if it was in no such status.
        ``effect`` runs under the lock, first: if it raises, the status stays as it was."""
        with self.lock:
            row = self.runs.get(str(run_id))
            if row is None or row.status not in source:
                return False
            if effect is not None:
                effect()
            row.status = target
        return True

    def mark_published(self, run_id: str) -> None:
        with self.lock:
            if (row := self.runs.get(str(run_id))) is not None:
                row.published_at = self.clock()

    def add_recovery(self, run_id: str, done: list[str]) -> int:
        """Record an in-place recovery with the steps already done; returns its epoch (1, 2...)."""
        with self.lock:
            row = self.runs[str(run_id)]
            row.recoveries.append(list(done))
            return len(row.recoveries)

    def add_event(self, run_id: str, kind: str, detail: str | None = None) -> None:
        with self.lock:
            if (row := self.runs.get(str(run_id))) is not None:
                row.events.append((self.clock(), kind, detail))

    # -- housekeeping

    def fold_metrics(self) -> int:
        """Nothing to fold: metrics are PostgreSQL's."""
        return 0

    @contextlib.contextmanager
    def schedule_slot(self, workflow: str) -> Iterator[ScheduledRun | None]:
        """Hold ``workflow``'s schedule lock for the block; yields its newest scheduled run."""
        with self.lock:
            slot = self._schedule_locks.setdefault(workflow, threading.Lock())
        with slot:
            with self.lock:
                rows = [
                    r
                    for r in self.runs.values()
                    if r.workflow == workflow and r.trigger == Trigger.SCHEDULE
                ]
                newest = max(rows, key=lambda r: r.created_at, default=None)
                found = (
                    None
                    if newest is None
                    else ScheduledRun(
                        newest.id, newest.status, newest.idempotency_key, newest.created_at
                    )
                )
            yield found

    def delete_finished_before(self, cutoff: datetime, batch_size: int = 1000) -> int:
        """Delete finished runs created before ``cutoff``; how many."""
        with self.lock:
            old = [r.id for r in self.runs.values() if r.created_at < cutoff and r.ended]
            for run_id in old:
                row = self.runs.pop(run_id)
                if row.idempotency_key is not None:
                    self._keys.pop(row.idempotency_key, None)
            return len(old)

    # -- dead letters

    def add_dead_letter(self, letter: DeadLetterRecord) -> None:
        """Keep a dead letter (its id is the next one)."""
        with self.lock:
            letter_id = next(self._letter_ids)
            self.letters[letter_id] = replace(letter, id=letter_id)

    def dead_letters(
        self, limit: int = 50, include_replayed: bool = False
    ) -> list[DeadLetterRecord]:
        """Newest first; those replayed only with ``include_replayed``."""
        with self.lock:
            found = [
                letter
                for _, letter in sorted(self.letters.items(), reverse=True)
                if include_replayed or letter.replayed_at is None
            ]
            return found[:limit]

    def dead_letter(self, letter_id: int) -> DeadLetterRecord | None:
        with self.lock:
            return self.letters.get(letter_id)

    def mark_replayed(self, letter_id: int, replayed: bool = True) -> bool:
        """Mark a dead letter replayed (or not); False if it already was (or was not)."""
        with self.lock:
            letter = self.letters.get(letter_id)
            if letter is None or (letter.replayed_at is None) != replayed:
                return False
            self.letters[letter_id] = replace(
                letter, replayed_at=self.clock() if replayed else None
            )
            return True
