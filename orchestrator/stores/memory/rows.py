"""The rows of the in-memory history: what PostgreSQL's tables hold, as mutable dataclasses.

Values (inputs, outputs, results) are kept encoded with :mod:`orchestrator.codec`, as in a JSONB
column, and decoded when a record is read: a reader gets what it would get from PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.codec import Encoded, UnencodableValue, decode, encode
from orchestrator.records import AttemptRecord, RunRecord, StepRecord
from orchestrator.status import RunStatus, StepStatus

WAITING = (StepStatus.PENDING, StepStatus.RETRYING)


def stored(value: Any) -> str:
    """``value`` as a JSONB column would hold it (a result already encoded is kept)."""
    return str(value) if isinstance(value, Encoded) else encode(value)


def loaded(raw: str | None) -> Any:
    return None if raw is None else decode(raw)


def lenient(value: Any) -> Any:
    """``value`` as stored for a dead letter: what Celery's JSON cannot encode becomes its repr."""
    try:
        return decode(encode(value))
    except UnencodableValue:
        return repr(value)


@dataclass
class AttemptRow:
    attempt: int
    status: StepStatus
    worker: str | None = None
    error: str | None = None
    traceback: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def record(self) -> AttemptRecord:
        return AttemptRecord(
            self.attempt,
            self.status,
            self.worker,
            self.error,
            self.traceback,
            self.started_at,
            self.finished_at,
        )


@dataclass
class StepRow:
    step_id: str
    task_name: str
    celery_task_id: str
    status: StepStatus
    queued_at: datetime
    result: str | None = None
    attempts: int = 0
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt_log: dict[int, AttemptRow] = field(default_factory=dict)

    def record(self) -> StepRecord:
        return StepRecord(
            step_id=self.step_id,
            task=self.task_name,
            status=self.status,
            attempts=self.attempts,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            result=loaded(self.result),
            celery_task_id=self.celery_task_id,
            queued_at=self.queued_at,
            attempt_log=[self.attempt_log[n].record() for n in sorted(self.attempt_log)],
        )

    def end(self, status: StepStatus, at: datetime, error: str | None) -> None:
        """A step that never ran (or whose end was presumed) ends, keeping its first error."""
        self.status, self.finished_at, self.error = status, at, self.error or error


@dataclass
class RunRow:
    id: str
    workflow: str
    workflow_version: str
    inputs: str
    trigger: str
    created_at: datetime
    idempotency_key: str | None = None
    correlation_id: str | None = None
    tenant_id: str | None = None
    parent_run_id: str | None = None
    parent_step_id: str | None = None
    priority: int | None = None
    done_steps: list[str] = field(default_factory=list)
    status: RunStatus = RunStatus.PENDING
    output: str | None = None
    error: str | None = None
    error_step: str | None = None
    recoveries: list[list[str]] = field(default_factory=list)
    published_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    steps: dict[str, StepRow] = field(default_factory=dict)
    events: list[tuple[datetime, str, str | None]] = field(default_factory=list)
    context: dict[str, str] | None = None  # each value encoded, as the JSONB column holds it
    context_version: int = 0

    def record(self) -> RunRecord:
        return RunRecord(
            id=self.id,
            workflow=self.workflow,
            workflow_version=self.workflow_version,
            status=self.status,
            inputs=loaded(self.inputs),
            output=loaded(self.output),
            error=self.error,
            error_step=self.error_step,
            trigger=self.trigger,
            idempotency_key=self.idempotency_key,
            correlation_id=self.correlation_id,
            tenant_id=self.tenant_id,
            parent_run_id=self.parent_run_id,
            parent_step_id=self.parent_step_id,
            priority=self.priority,
            done_steps=list(self.done_steps),
            recoveries=[list(r) for r in self.recoveries],
            published_at=self.published_at,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )

    @property
    def ended(self) -> bool:
        return self.status.terminal

    def waiting(self) -> list[StepRow]:
        """Its steps not started (pending, or retrying between attempts)."""
        return [s for s in self.steps.values() if s.status in WAITING]
