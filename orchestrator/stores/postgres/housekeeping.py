"""History housekeeping: the overlap check of scheduled runs, retention, metric totals.

- :func:`schedule_lock` serialises "is the previous scheduled run finished? then submit" per
  workflow across every worker process and host (a PostgreSQL transaction advisory lock).
- :func:`latest_scheduled_run` is the newest run of a workflow started by the schedule.
- :func:`fold_deltas` moves the metric deltas the triggers write into their totals.
- :func:`delete_finished_runs_before` deletes finished runs created before a cutoff, in batches
  of short transactions; ``task_runs`` and ``task_attempts`` go with them (``ON DELETE CASCADE``).

:class:`Housekeeping` gives the history store these as methods of the ``RunHistory`` port.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select, text
from sqlalchemy.exc import InterfaceError, OperationalError

from orchestrator.records import ScheduledRun
from orchestrator.status import RunStatus, Trigger
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.models import WorkflowRun
from orchestrator.stores.postgres.statuses import RUNS_ENDED

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
"""Errors of an unreachable or restarting PostgreSQL, worth retrying."""
FOLD_BATCH = 10_000  # delta rows folded per transaction
FOLD_BATCHES = 20  # transactions per fold at most; what is left is summed by the scrape

_FOLD_LOCK = text(
    "SELECT pg_try_advisory_xact_lock(hashtextextended('orchestrator.metrics.fold', 0))"
)
_FOLD = text("""
WITH moved AS (
    DELETE FROM metric_deltas
    WHERE id IN (SELECT id FROM metric_deltas ORDER BY id LIMIT :batch)
    RETURNING metric, key, part, n, amount
), added AS (
    INSERT INTO metric_totals AS m (metric, key, part, n, amount)
    SELECT metric, key, part, sum(n), sum(amount) FROM moved
    GROUP BY metric, key, part ORDER BY metric, key, part
    ON CONFLICT (metric, key, part)
    DO UPDATE SET n = m.n + EXCLUDED.n, amount = m.amount + EXCLUDED.amount
)
SELECT count(*) FROM moved
""")


@contextlib.contextmanager
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
    return None if row is None else ScheduledRun(str(row[0]), RunStatus(row[1]), row[2], row[3])


def delete_finished_runs_before(engine: Engine, cutoff: datetime, batch_size: int = 1000) -> int:
    """Delete finished runs created before ``cutoff``, ``batch_size`` per transaction; the count.

    Unfinished runs (pending, running, paused) are kept whatever their age: they can still be
    resumed or cancelled.
    """
    total = 0
    while True:
        batch = (
            select(WorkflowRun.id)
            .where(WorkflowRun.created_at < cutoff, WorkflowRun.status.in_(RUNS_ENDED))
            .order_by(WorkflowRun.created_at)
            .limit(batch_size)
        )
        with engine.begin() as conn:
            deleted = conn.execute(delete(WorkflowRun).where(WorkflowRun.id.in_(batch))).rowcount
        total += deleted
        if deleted < batch_size:
            return total


def fold_deltas(engine: Engine, batch: int = FOLD_BATCH, batches: int = FOLD_BATCHES) -> int:
    """Move metric deltas into the totals, ``batch`` rows per transaction, at most ``batches``
    transactions; how many rows moved (0 while another process folds). The totals a scrape
    reads are the same before and after: this only keeps ``metric_deltas`` short."""
    moved = 0
    with engine.connect() as conn:
        for _ in range(batches):
            with conn.begin():
                if not conn.execute(_FOLD_LOCK).scalar():
                    return moved
                count = int(conn.execute(_FOLD, {"batch": batch}).scalar_one())
            moved += count
            if count < batch:
                break
    return moved


class Housekeeping(Database):
    """Housekeeping as methods of the history store."""

    def fold_metrics(self) -> int:
        """Move the metric deltas into their totals (keeps ``metric_deltas`` short)."""
        return fold_deltas(self.engine)

    @contextlib.contextmanager
    def schedule_slot(self, workflow: str) -> Iterator[ScheduledRun | None]:
        """Hold ``workflow``'s schedule lock (every process and host) for the block; yields its
        newest scheduled run. The block decides whether to start the next one."""
        with schedule_lock(self.engine, workflow) as conn:
            yield latest_scheduled_run(conn, workflow)

    def delete_finished_before(self, cutoff: datetime, batch_size: int = 1000) -> int:
        """Delete finished runs created before ``cutoff`` (in short batches); how many."""
        return delete_finished_runs_before(self.engine, cutoff, batch_size)
