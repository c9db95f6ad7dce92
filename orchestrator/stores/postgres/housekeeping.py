"""History queries for beat's tasks: the overlap check of scheduled runs, and retention.

- :func:`schedule_lock` serialises "is the previous scheduled run finished? then submit" per
  workflow across every worker process and host (a PostgreSQL transaction advisory lock).
- :func:`latest_scheduled_run` is the newest run of a workflow started by the schedule.
- :func:`delete_finished_runs_before` deletes finished runs created before a cutoff, in batches
  of short transactions; ``task_runs`` and ``task_attempts`` go with them (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.exc import InterfaceError, OperationalError

from orchestrator.status import RUN_TERMINAL, Trigger
from orchestrator.stores.postgres.models import WorkflowRun

TERMINAL_RUNS = tuple(sorted(RUN_TERMINAL))
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
"""Errors of an unreachable or restarting PostgreSQL, worth retrying."""


@dataclass(frozen=True)
class ScheduledRun:
    """The parts of a scheduled run the overlap check needs."""

    id: str
    status: str
    idempotency_key: str | None
    created_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in RUN_TERMINAL


@contextmanager
def schedule_lock(engine: Engine, workflow: str) -> Iterator[Connection]:
    """Hold the per-workflow schedule lock (released when the block ends, even on error)."""
    with engine.begin() as conn:
        key = func.hashtextextended(f"orchestrator.schedule:{workflow}", 0)
        conn.execute(select(func.pg_advisory_xact_lock(key)))
        yield conn


def latest_scheduled_run(conn: Connection, workflow: str) -> ScheduledRun | None:
    """The newest run of ``workflow`` whose trigger is ``schedule``, or None."""
    row = conn.execute(
        select(
            WorkflowRun.id, WorkflowRun.status, WorkflowRun.idempotency_key, WorkflowRun.created_at
        )
        .where(WorkflowRun.workflow == workflow, WorkflowRun.trigger == str(Trigger.SCHEDULE))
        .order_by(WorkflowRun.created_at.desc())
        .limit(1)
    ).first()
    return None if row is None else ScheduledRun(str(row[0]), row[1], row[2], row[3])


def delete_finished_runs_before(engine: Engine, cutoff: datetime, batch_size: int = 1000) -> int:
    """Delete finished runs created before ``cutoff``, ``batch_size`` per transaction; the count.

    Unfinished runs (pending, running, paused) are kept whatever their age: they can still be
    resumed or cancelled.
    """
    total = 0
    while True:
        batch = (
            select(WorkflowRun.id)
            .where(WorkflowRun.created_at < cutoff, WorkflowRun.status.in_(TERMINAL_RUNS))
            .order_by(WorkflowRun.created_at)
            .limit(batch_size)
        )
        with engine.begin() as conn:
            deleted = conn.execute(delete(WorkflowRun).where(WorkflowRun.id.in_(batch))).rowcount
        total += deleted
        if deleted < batch_size:
            return total
