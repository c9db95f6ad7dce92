"""The records the ports exchange: runs, steps and dead letters as stored, what a submit
writes, the history events a worker hands to the writer, and the outcome of claiming a step.

Plain frozen dataclasses with no I/O, shared by the engine and every adapter
(``stores.postgres``, ``stores.redis``, ``stores.memory``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.status import RunStatus, StepStatus

UNSET: Any = object()  # a step event that carries no result


# --- history: what is stored -----------------------------------------------


@dataclass(frozen=True)
class NewStep:
    step_id: str
    task_name: str
    celery_task_id: str
    status: StepStatus = StepStatus.PENDING
    result: Any = None
    has_result: bool = False


@dataclass(frozen=True)
class NewRun:
    id: str
    workflow: str
    version: str
    spec: dict[str, Any]
    inputs: dict[str, Any]
    trigger: str
    idempotency_key: str | None = None
    correlation_id: str | None = None
    tenant_id: str | None = None
    parent_run_id: str | None = None
    done_steps: list[str] = field(default_factory=list)
    parent_step_id: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """A workflow run as stored."""

    id: str
    workflow: str
    workflow_version: str
    status: RunStatus
    inputs: dict[str, Any]
    output: Any
    error: str | None
    error_step: str | None
    trigger: str
    idempotency_key: str | None
    correlation_id: str | None
    tenant_id: str | None
    parent_run_id: str | None
    done_steps: list[str]
    recoveries: list[list[str]]
    published_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_step_id: str | None = None
    """The step of ``parent_run_id`` that started this run (a child workflow), or None."""


@dataclass(frozen=True)
class AttemptRecord:
    attempt: int
    status: StepStatus
    worker: str | None
    error: str | None
    traceback: str | None
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class StepRecord:
    """One step of a run as stored (``StepRun`` in the public API)."""

    step_id: str
    task: str
    status: StepStatus
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    result: Any
    celery_task_id: str
    queued_at: datetime | None
    attempt_log: list[AttemptRecord] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


@dataclass(frozen=True)
class DeadLetterRecord:
    """A message that failed for good, as stored; ``replayed_at`` once it was replayed."""

    id: int
    run_id: str | None
    step_id: str | None
    task: str
    celery_task_id: str | None
    reason: str
    args: Any
    kwargs: Any
    error: str | None
    traceback: str | None
    created_at: datetime
    replayed_at: datetime | None


# --- history: what the console asks -------------------------------------------


@dataclass(frozen=True)
class RunQuery:
    """Which runs a listing holds, newest first: of a workflow and status, created in
    [``since``, ``until``), matching ``search`` (a run id prefix, an idempotency key or a
    correlation id), and older than ``after`` (the created time and id of the last run of the
    page before: keyset pagination, as fast on page 1000 as on page 1)."""

    workflow: str | None = None
    status: RunStatus | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    after: tuple[datetime, str] | None = None

    @property
    def id_range(self) -> tuple[str, str] | None:
        """The first and the last run id that start with ``search``, if it can start one."""
        digits = (self.search or "").replace("-", "").lower()
        if not digits or len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
            return None
        low, high = digits.ljust(32, "0"), digits.ljust(32, "f")
        return _uuid_text(low), _uuid_text(high)


def _uuid_text(digits: str) -> str:
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass(frozen=True)
class RunCount:
    """How many runs created in the bucket starting ``at`` have ``status``."""

    at: datetime
    status: RunStatus
    n: int


@dataclass(frozen=True)
class StepDurations:
    """Seconds the steps that started in the bucket starting ``at`` took (attempts included)."""

    at: datetime
    n: int
    p50: float
    p95: float
    longest: float


# --- history: what beat's overlap check needs --------------------------------


@dataclass(frozen=True)
class ScheduledRun:
    """The parts of a scheduled run the overlap check needs."""

    id: str
    status: RunStatus
    idempotency_key: str | None
    created_at: datetime

    @property
    def finished(self) -> bool:
        return self.status.terminal


# --- history: what workers write ---------------------------------------------


@dataclass(frozen=True)
class StepEvent:
    """A step's attempt started or ended (``status`` is the step's new status)."""

    run_id: str
    step_id: str
    attempt: int
    status: StepStatus
    at: datetime
    worker: str | None = None
    result: Any = UNSET
    error: str | None = None
    traceback: str | None = None
    starts_run: bool = False
    started_at: datetime | None = None


@dataclass(frozen=True)
class SkipSteps:
    """Steps that will never run get ``status`` (only from pending/retrying)."""

    run_id: str
    steps: tuple[str, ...]
    status: StepStatus
    at: datetime
    reason: str | None = None


@dataclass(frozen=True)
class RunFinal:
    """The run ended: ``succeeded`` with its output, or ``failed`` at ``error_step``."""

    run_id: str
    status: RunStatus
    at: datetime
    output: Any = None
    error: str | None = None
    error_step: str | None = None


@dataclass(frozen=True)
class DeadLetterEvent:
    """A message that failed for good: exhausted attempts, bad arguments, unregistered task."""

    task: str
    reason: str
    at: datetime
    run_id: str | None = None
    step_id: str | None = None
    celery_task_id: str | None = None
    args: Any = None
    kwargs: Any = None
    error: str | None = None
    traceback: str | None = None


Event = StepEvent | SkipSteps | RunFinal | DeadLetterEvent
Ended = tuple[str, RunStatus]  # a run whose end a batch of events recorded, and that end


# --- run state -----------------------------------------------------------------

Lease = tuple[str, str, int]  # run id, step id, attempt: one delivery's hold on a step


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a step: ``go`` (with parents' results), or why not.

    ``busy`` carries the holder of the lease in ``flag``; ``missing`` names the parent whose
    result is not in Redis (lost with Redis's data, or evicted) in ``flag``; ``stale``: a later
    attempt of the step was scheduled (this is a late copy of an attempt that already ran).
    """

    outcome: str  # go | flag | done | busy | missing | stale
    flag: str | None = None
    result: Any = None
    deliveries: int = 0
    parents: tuple[Any, ...] = ()
