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
    priority: int | None = None
    published: bool = False  # recorded as published: its submitter publishes it at once


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
    priority: int | None = None
    """0 (lowest) .. 9 for its steps without one of their own (None: 0), kept so a recovered,
    queued, retried or child run publishes at it too."""


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
    waiting_for: str | None = None
    """Why the step has not ended and is not running: ``None`` (it runs, it waits for the
    steps it runs after, or its run ended), or one of :data:`WAIT_REASONS`; computed when a
    run's steps are read (``RunHandle.steps()``), from what Redis and history hold."""
    waiting_detail: str | None = None
    """What a person reads about the wait (``"breaker 'warehouse' open until 12:03:05"``)."""

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


@dataclass(frozen=True)
class ScheduleState:
    """A workflow's schedule as beat's fire task left it: paused, and the last fire time it
    handled (started, skipped or caught up; None before its first fire)."""

    workflow: str
    paused: bool = False
    last_fire_time: datetime | None = None
    updated_at: datetime | None = None


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
    settled: tuple[Settled, ...] = ()
    """A success's steps as Redis has them: rows that other processes' writers have not yet
    written are written with the end, so the run succeeds without waiting for them."""


@dataclass(frozen=True)
class Outcomes:
    """What a run's state in Redis holds of its steps' ends (``RunStateStore.outcomes``)."""

    results: dict[str, str]
    """Encoded results of the steps asked about that have one."""
    attempts: dict[str, int]
    """The current attempt of each step or item that was retried."""
    started: dict[str, float]
    """When each step or item was first claimed (epoch seconds, its worker's clock)."""
    finished: dict[str, float]
    """When each step or item that succeeded finished (epoch seconds, its worker's clock)."""
    flag: str | None = None
    """The run's control flag (``paused``, ``cancelled``, ``failed``), if one is set."""


@dataclass(frozen=True)
class EndNotice:
    """A run's end as announced to those who wait for it (``RunStateStore.watch_done``).

    History announces every end once it has written it (``output`` None). The worker that ends
    a run that succeeded announces it before, with its encoded ``output`` from Redis, so that
    ``RunHandle.wait()`` returns without waiting for history's transaction."""

    status: str
    output: str | None = None


@dataclass(frozen=True)
class Settled:
    """A step of a succeeded run as its run state in Redis knows it: its encoded result (or
    ``skipped``) and its current attempt."""

    step_id: str
    result: str
    attempt: int
    skipped: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None


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


@dataclass(frozen=True)
class ContextEvent:
    """A run's context after a ``current_run.context.set``: all of it (``context``, each
    value Celery's JSON), with the ``version`` Redis gave that change; history keeps the
    highest version it was handed, whatever order events of several workers arrive in."""

    run_id: str
    version: int
    context: dict[str, str]
    at: datetime


Event = StepEvent | SkipSteps | RunFinal | DeadLetterEvent | ContextEvent
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


# --- waiting and workers ----------------------------------------------------------

WAIT_REASONS = (
    "queue",
    "retry_delay",
    "breaker",
    "rate_limit",
    "concurrency",
    "signal",
    "sleep",
    "paused",
    "child_run",
)
"""What a step that has not ended can wait for (``StepRun.waiting_for``, design section 4)."""


HEARTBEAT_EVERY = 5.0
"""Seconds between two heartbeats of a worker (``orchestrator.ops.workers.Heartbeat``)."""
LOST_AFTER = 3 * HEARTBEAT_EVERY
"""A worker silent for longer than this (3 missed heartbeats) is listed ``lost``."""
DROPPED_AFTER = 600.0
"""A worker silent for longer than this is no longer listed at all."""


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as its heartbeat describes it: node name, the queues it consumes, the tasks
    it registered, its concurrency and pid, the steps it runs (``(run id, step id)`` pairs),
    when it started and when it last wrote its heartbeat (its own clock).

    ``lost``: it has not written a heartbeat for longer than :data:`LOST_AFTER` (measured by
    Redis's clock): it died, hangs or
    cannot reach Redis; ``silent_for`` is how many seconds it has been quiet. A lost worker's
    steps are the reconciler's to recover once their leases lapse."""

    name: str
    queues: tuple[str, ...]
    tasks: tuple[str, ...]
    concurrency: int | None
    pid: int
    started_at: float
    seen_at: float
    running: tuple[tuple[str, str], ...] = ()
    lost: bool = False
    silent_for: float = 0.0

    @property
    def state(self) -> str:
        """``live`` or ``lost``."""
        return "lost" if self.lost else "live"

    @property
    def host(self) -> str:
        """The host part of the node name (``worker1@host``)."""
        return self.name.partition("@")[2] or self.name

    def consumes(self, queue: str) -> bool:
        return queue in self.queues

    def has(self, task: str) -> bool:
        return task in self.tasks


@dataclass(frozen=True)
class SignalRecord:
    """A signal sent to a run (``run.signal``): kept in PostgreSQL from the moment it is sent,
    so a ``wait_for`` reached later, or after Redis lost its data, still finds it."""

    id: int
    run_id: str
    name: str
    payload: Any
    sender: str | None
    size: int
    """The payload's size in bytes, as JSON."""
    at: datetime


@dataclass(frozen=True)
class ParkedStep:
    """A ``sleep`` or ``wait_for`` step that waits, holding no worker slot: what wakes it (the
    time it is due, its signal) and the message that ends it once delivered again."""

    run_id: str
    step_id: str
    signal: str | None
    due: float | None
    """When it is due, as a Unix time (a sleep's end, a ``wait_for``'s timeout), or None."""
    message: dict[str, Any]
