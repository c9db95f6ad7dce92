"""The history writer in this process: the twin of ``stores.postgres.writer``.

Each event is applied at once, under the history's lock, as the PostgreSQL writer applies a
batch of one: a step's status moves only forward (a terminal step never moves back, except that
one presumed not started, ``skipped`` or ``cancelled``, records how it really ended), its attempt
is upserted, a run ends once (a failure skips the steps not started; success needs the sinks'
output and every step succeeded). The runs whose end an event recorded are handed to
``on_finalized``, after the lock is released, as the PostgreSQL writer does after its commit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from orchestrator.records import (
    UNSET,
    ContextEvent,
    DeadLetterEvent,
    DeadLetterRecord,
    Ended,
    Event,
    RunFinal,
    Settled,
    SkipSteps,
    StepEvent,
)
from orchestrator.status import ATTEMPT_ENDED, RunStatus, StepStatus
from orchestrator.stores.memory.history import MemoryHistory
from orchestrator.stores.memory.rows import WAITING, AttemptRow, RunRow, StepRow, lenient, stored


class MemoryWriter:
    """Applies history events to a :class:`MemoryHistory` as they are submitted."""

    def __init__(
        self, history: MemoryHistory, on_finalized: Callable[[list[Ended]], None] | None = None
    ) -> None:
        self.history = history
        self.on_finalized = on_finalized

    def submit(self, event: Event) -> None:
        with self.history.lock:
            ended = self._apply(event)
        if ended and self.on_finalized is not None:
            self.on_finalized(ended)

    def flush(self, timeout: float = 30.0) -> bool:
        """Nothing is ever queued."""
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Nothing to write."""

    def _apply(self, event: Event) -> list[Ended]:
        if isinstance(event, DeadLetterEvent):
            self.history.add_dead_letter(_letter(event))
            return []
        if isinstance(event, ContextEvent):
            self.history.keep_context(event)
            return []
        row = self.history.runs.get(event.run_id)
        if row is None:
            return []
        if isinstance(event, SkipSteps):
            for step_id in event.steps:
                step = row.steps.get(step_id)
                if step is not None and step.status in WAITING:
                    step.end(event.status, event.at, event.reason)
            return _succeeded(row) if event.status == StepStatus.SKIPPED else []
        if isinstance(event, StepEvent):
            _step(row, event)
            return _succeeded(row) if event.status == StepStatus.SUCCEEDED else []
        return _final(row, event)


def _step(row: RunRow, event: StepEvent) -> None:
    started = event.started_at or (event.at if event.status == StepStatus.RUNNING else None)
    finished = event.at if event.status in ATTEMPT_ENDED else None
    if event.starts_run and row.status == RunStatus.PENDING:
        row.status, row.started_at = RunStatus.RUNNING, started or event.at
    step = row.steps.get(event.step_id)
    if step is None:
        return
    if step.attempts <= event.attempt and _moves(step, event.status):
        step.status = event.status
        step.attempts = max(step.attempts, event.attempt)
        step.started_at = step.started_at or started
        step.finished_at = finished or step.finished_at
        if event.result is not UNSET:
            step.result = stored(event.result)
        step.error = None if event.status == StepStatus.SUCCEEDED else event.error or step.error
    if event.status not in (StepStatus.SKIPPED, StepStatus.CANCELLED):
        _attempt(step, event, started, finished)


def _moves(step: StepRow, status: StepStatus) -> bool:
    """Whether a step's row takes ``status`` (the condition of the PostgreSQL update)."""
    return (
        not step.status.terminal
        or (step.status == status and (step.finished_at is None or status == StepStatus.SUCCEEDED))
        or (
            step.status in (StepStatus.SKIPPED, StepStatus.CANCELLED)
            and status in (StepStatus.SUCCEEDED, StepStatus.FAILED)
        )
    )


def _attempt(
    step: StepRow, event: StepEvent, started: datetime | None, finished: datetime | None
) -> None:
    found = step.attempt_log.get(event.attempt)
    if found is None:
        step.attempt_log[event.attempt] = found = AttemptRow(event.attempt, event.status)
    if found.finished_at is None:
        found.status = event.status
    found.worker = found.worker or event.worker
    found.error = event.error or found.error
    found.traceback = event.traceback or found.traceback
    found.started_at = found.started_at or started
    found.finished_at = found.finished_at or finished


def _final(row: RunRow, final: RunFinal) -> list[Ended]:
    if final.status == RunStatus.SUCCEEDED:
        if not row.ended:
            row.output, row.finished_at = stored(final.output), final.at
        for settled in final.settled:  # rows other writers have not written yet
            step = row.steps.get(settled.step_id)
            if step is not None and not step.status.terminal:
                _settle(step, settled, final.at)
        return _succeeded(row)
    ended: list[Ended] = []
    if not row.ended:
        row.status, row.error, row.error_step = RunStatus.FAILED, final.error, final.error_step
        row.finished_at, row.started_at = final.at, row.started_at or final.at
        ended.append((row.id, RunStatus.FAILED))
    if row.status == RunStatus.FAILED:  # nothing new starts in a failed run
        for step in row.waiting():
            step.end(StepStatus.SKIPPED, final.at, final.error)
    return ended


def _settle(step: StepRow, settled: Settled, at: datetime) -> None:
    """A step's row as its run's end found it in Redis (the condition of ``_SETTLE``)."""
    step.attempts = max(step.attempts, settled.attempt)
    step.started_at = step.started_at or settled.started_at
    step.finished_at = step.finished_at or settled.finished_at or at
    if settled.skipped:
        step.status = StepStatus.SKIPPED
    else:
        step.status, step.result, step.error = StepStatus.SUCCEEDED, settled.result, None


def _succeeded(row: RunRow) -> list[Ended]:
    """A run succeeds once its sinks reported and every step succeeded, whichever comes last."""
    if row.ended or row.finished_at is None:
        return []
    if any(s.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in row.steps.values()):
        return []
    row.status, row.started_at = RunStatus.SUCCEEDED, row.started_at or row.finished_at
    return [(row.id, RunStatus.SUCCEEDED)]


def _letter(event: DeadLetterEvent) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=0,
        run_id=event.run_id,
        step_id=event.step_id,
        task=event.task,
        celery_task_id=event.celery_task_id,
        reason=event.reason,
        args=lenient(event.args),
        kwargs=lenient(event.kwargs),
        error=event.error,
        traceback=event.traceback,
        created_at=event.at,
        replayed_at=None,
    )
