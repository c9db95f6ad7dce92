"""The console's one run model: what the API returns and every page shows of a run.

Built from the records of the ``RunHistory`` port (a run, its steps with their attempts, its
events) and the workflow's spec as the engine plans it; the same objects are serialized by
``/api/v1`` and rendered by the pages, so the two never disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from orchestrator.records import AttemptRecord, RunRecord, StepRecord
from orchestrator.status import RunStatus, StepStatus

ACTIONS: dict[RunStatus, tuple[str, ...]] = {
    RunStatus.PENDING: ("pause", "cancel"),
    RunStatus.RUNNING: ("pause", "cancel"),
    RunStatus.PAUSED: ("resume", "cancel"),
    RunStatus.FAILED: ("retry",),
    RunStatus.CANCELLED: ("retry",),
    RunStatus.SUCCEEDED: (),
}
"""What may be done to a run in each status; a run that has not ended also takes a signal (the
run page's signal form, ``POST /runs/{id}/signal``)."""


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


class Attempt(BaseModel):
    attempt: int
    status: StepStatus
    worker: str | None
    error: str | None
    traceback: str | None
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None


class Step(BaseModel):
    """A step of a run: its place in the DAG (``after``), status, attempts and Flower link."""

    step_id: str
    task: str
    after: list[str]
    item_of: str | None
    """The ``for_each`` step this row is an item of (``step[3]``); None for a step of the spec."""
    status: StepStatus
    attempts: int
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    error: str | None
    result: Any
    celery_task_id: str
    flower_url: str
    attempt_log: list[Attempt]
    waiting_for: str | None = None
    """What the step waits for while its run goes on (``StepRun.waiting_for``), or None."""
    waiting_detail: str | None = None


class Event(BaseModel):
    at: datetime
    kind: str
    detail: str | None


class RunSummary(BaseModel):
    """A run as a listing shows it."""

    id: str
    workflow: str
    status: RunStatus
    trigger: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    seconds: float | None
    error_step: str | None
    error: str | None
    idempotency_key: str | None
    correlation_id: str | None
    parent_run_id: str | None
    parent_step_id: str | None
    """The step of ``parent_run_id`` that started this run as a child workflow (None: a retry)."""


class Run(RunSummary):
    """A run with everything the run page shows."""

    workflow_version: str
    tenant_id: str | None
    inputs: dict[str, Any]
    output: Any
    steps: list[Step]
    events: list[Event]
    children: list[RunSummary]
    """The runs of child workflows its steps started."""
    actions: list[str]
    """What may be done to it now: pause, resume, cancel, retry."""
    context: dict[str, Any] = {}
    """The run's shared context (``run.context()``)."""


class RunPage(BaseModel):
    """A page of a listing; ``next`` fetches the page after it (None: this is the last)."""

    runs: list[RunSummary]
    next: str | None


def summary(record: RunRecord) -> RunSummary:
    return RunSummary(
        id=record.id,
        workflow=record.workflow,
        status=record.status,
        trigger=record.trigger,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        seconds=seconds(record.started_at, record.finished_at),
        error_step=record.error_step,
        error=record.error,
        idempotency_key=record.idempotency_key,
        correlation_id=record.correlation_id,
        parent_run_id=record.parent_run_id,
        parent_step_id=record.parent_step_id,
    )


def attempt(record: AttemptRecord) -> Attempt:
    return Attempt(
        attempt=record.attempt,
        status=record.status,
        worker=record.worker,
        error=record.error,
        traceback=record.traceback,
        started_at=record.started_at,
        finished_at=record.finished_at,
        seconds=seconds(record.started_at, record.finished_at),
    )


def step(record: StepRecord, after: list[str], item_of: str | None, flower: str) -> Step:
    return Step(
        step_id=record.step_id,
        task=record.task,
        after=after,
        item_of=item_of,
        status=record.status,
        attempts=record.attempts,
        queued_at=record.queued_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        seconds=record.duration,
        error=record.error,
        result=record.result,
        celery_task_id=record.celery_task_id,
        flower_url=f"{flower.rstrip('/')}/task/{record.celery_task_id}",
        attempt_log=[attempt(a) for a in record.attempt_log],
        waiting_for=record.waiting_for,
        waiting_detail=record.waiting_detail,
    )


def run(
    record: RunRecord,
    steps: list[Step],
    events: list[tuple[datetime, str, str | None]],
    children: list[RunRecord],
    context: dict[str, Any] | None = None,
) -> Run:
    return Run(
        **summary(record).model_dump(),
        workflow_version=record.workflow_version,
        tenant_id=record.tenant_id,
        inputs=record.inputs,
        output=record.output,
        steps=steps,
        events=[Event(at=at, kind=kind, detail=detail) for at, kind, detail in events],
        children=[summary(c) for c in children],
        actions=list(ACTIONS.get(record.status, ())),
        context=context or {},
    )
