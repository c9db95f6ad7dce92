"""Rows to records and back: the history tables' rows as the records the ports exchange
(statuses as enums, ids as strings, JSON values revived), and what a submit inserts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from orchestrator.codec import revive
from orchestrator.records import (
    AttemptRecord,
    DeadLetterRecord,
    NewRun,
    NewStep,
    RunRecord,
    StepRecord,
)
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.postgres.models import DeadLetter, TaskAttempt, TaskRun, WorkflowRun


def run_values(run: NewRun) -> dict[str, Any]:
    return {
        "id": uuid.UUID(run.id),
        "workflow": run.workflow,
        "workflow_version": run.version,
        "status": RunStatus.PENDING.value,
        "inputs": run.inputs,
        "trigger": run.trigger,
        "idempotency_key": run.idempotency_key,
        "correlation_id": run.correlation_id,
        "tenant_id": run.tenant_id,
        "parent_run_id": uuid.UUID(run.parent_run_id) if run.parent_run_id else None,
        "parent_step_id": run.parent_step_id,
        "priority": run.priority,
        "done_steps": run.done_steps,
    }


def step_values(run_id: str, step: NewStep) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {
        "run_id": uuid.UUID(run_id),
        "step_id": step.step_id,
        "task_name": step.task_name,
        "celery_task_id": step.celery_task_id,
        "status": step.status.value,
        "attempts": 0,
        "result": step.result if step.has_result else None,
        "queued_at": at,
        "finished_at": at if step.status != StepStatus.PENDING else None,
    }


def run_record(row: WorkflowRun | Row[Any]) -> RunRecord:
    """A run from its ORM row or a Core row of ``workflow_runs``'s columns."""
    return RunRecord(
        id=str(row.id),
        workflow=row.workflow,
        workflow_version=row.workflow_version,
        status=RunStatus(row.status),
        inputs=revive(row.inputs),
        output=revive(row.output),
        error=row.error,
        error_step=row.error_step,
        trigger=row.trigger,
        idempotency_key=row.idempotency_key,
        correlation_id=row.correlation_id,
        tenant_id=row.tenant_id,
        parent_run_id=str(row.parent_run_id) if row.parent_run_id else None,
        parent_step_id=row.parent_step_id,
        priority=row.priority,
        done_steps=list(row.done_steps or []),
        recoveries=list(row.recoveries or []),
        published_at=row.published_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def step_record(row: TaskRun, attempts: list[AttemptRecord]) -> StepRecord:
    return StepRecord(
        step_id=row.step_id,
        task=row.task_name,
        status=StepStatus(row.status),
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        result=revive(row.result),
        celery_task_id=row.celery_task_id,
        queued_at=row.queued_at,
        attempt_log=attempts,
    )


def attempt_record(row: TaskAttempt) -> AttemptRecord:
    return AttemptRecord(
        row.attempt,
        StepStatus(row.status),
        row.worker,
        row.error,
        row.traceback,
        row.started_at,
        row.finished_at,
    )


def dead_letter_record(row: DeadLetter) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=row.id,
        run_id=str(row.run_id) if row.run_id else None,
        step_id=row.step_id,
        task=row.task,
        celery_task_id=row.celery_task_id,
        reason=row.reason,
        args=row.args,
        kwargs=row.kwargs,
        error=row.error,
        traceback=row.traceback,
        created_at=row.created_at,
        replayed_at=row.replayed_at,
    )
