"""Synchronous reads and writes of run history: submit, look up, list, cancel.

The hot path of a step never calls this module; workers write through
:class:`orchestrator.stores.postgres.writer.HistoryWriter`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from orchestrator.codec import for_postgres, revive
from orchestrator.errors import ServiceUnavailable
from orchestrator.records import (
    AttemptRecord,
    NewRun,
    NewStep,
    RunRecord,
    ScheduledRun,
    StepRecord,
)
from orchestrator.settings import redact
from orchestrator.status import RUN_TERMINAL, STEP_TERMINAL
from orchestrator.stores.postgres import housekeeping
from orchestrator.stores.postgres.models import (
    DeadLetter,
    RunEvent,
    TaskAttempt,
    TaskRun,
    WorkflowRun,
    WorkflowSpecRow,
)

T = TypeVar("T")
TERMINAL_STEPS = tuple(sorted(STEP_TERMINAL))
TERMINAL_RUNS = tuple(sorted(RUN_TERMINAL))


def _reachable(cls: type[T]) -> type[T]:
    """Every public method raises ``ServiceUnavailable`` (URL redacted, what to do) when
    PostgreSQL cannot be reached, instead of a driver traceback."""
    for name, method in list(vars(cls).items()):
        if callable(method) and not name.startswith("_") and name != "dispose":
            setattr(cls, name, _translated(method))
    return cls


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: HistoryStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            orig = getattr(exc, "orig", None)
            detail = str(orig).strip().splitlines()[0] if orig else str(exc)
            raise ServiceUnavailable(
                "PostgreSQL",
                redact(render_url(self.url)),
                detail,
                "Start PostgreSQL, or set ORCHESTRATOR_DATABASE_URL to a server that runs "
                "(then `orchestrator db upgrade`)",
            ) from exc

    return call


def render_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


@_reachable
class HistoryStore:
    """The run-history tables, through a per-process SQLAlchemy engine."""

    def __init__(self, sqlalchemy_url: str) -> None:
        self.url = sqlalchemy_url
        self._engine: Engine | None = None
        self._pid = 0

    @property
    def engine(self) -> Engine:
        """This process's engine, with at most 2 connections: one kept open, one more while
        two threads (the history writer and a step, say) need one at once; a third waits for
        one to be free (30 s at most). A worker with ``-c 32`` holds at most 66 (32 pool
        children and the main process), not ~200.

        Connections are checked before use and replaced after 30 minutes; a forked pool child
        gets an engine of its own (it must not share its parent's connections)."""
        if self._engine is None or self._pid != os.getpid():
            self._engine = create_engine(
                self.url,
                pool_size=1,
                max_overflow=1,
                pool_pre_ping=True,
                pool_recycle=1800,
                json_serializer=for_postgres,  # Celery's JSON in every JSONB column
            )
            self._pid = os.getpid()
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    # -- specs ----------------------------------------------------------------------------------

    def ping(self) -> None:
        """Reach the database once (PostgreSQL away: ``ServiceUnavailable``)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- housekeeping

    def fold_metrics(self) -> int:
        """Move the metric deltas into their totals (keeps ``metric_deltas`` short)."""
        return housekeeping.fold_deltas(self.engine)

    @contextlib.contextmanager
    def schedule_slot(self, workflow: str) -> Iterator[ScheduledRun | None]:
        """Hold ``workflow``'s schedule lock (every process and host) for the block; yields its
        newest scheduled run. The block decides whether to start the next one."""
        with housekeeping.schedule_lock(self.engine, workflow) as conn:
            yield housekeeping.latest_scheduled_run(conn, workflow)

    def delete_finished_before(self, cutoff: datetime, batch_size: int = 1000) -> int:
        """Delete finished runs created before ``cutoff`` (in short batches); how many."""
        return housekeeping.delete_finished_runs_before(self.engine, cutoff, batch_size)

    def load_spec(self, version: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(WorkflowSpecRow.spec).where(WorkflowSpecRow.version == version)
            ).first()
        return None if row is None else dict(row[0])

    # -- submit ---------------------------------------------------------------------------------

    def create_run(self, run: NewRun, steps: list[NewStep]) -> tuple[str, bool]:
        """Write the run and its steps in one transaction; (run id, created).

        With an idempotency key that is already taken, nothing is written and the existing run's
        id is returned with ``created=False`` (also when two submits race).
        """
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    pg_insert(WorkflowSpecRow)
                    .values(version=run.version, workflow=run.workflow, spec=run.spec)
                    .on_conflict_do_nothing()
                )
                inserted = conn.execute(
                    pg_insert(WorkflowRun)
                    .values(**_run_values(run))
                    .on_conflict_do_nothing(index_elements=["idempotency_key"])
                    .returning(WorkflowRun.id)
                ).first()
                if inserted is None:
                    existing = self._by_key(conn, run.idempotency_key)
                    return existing, False
                conn.execute(insert(TaskRun), [_step_values(run.id, s) for s in steps])
        except IntegrityError:
            if run.idempotency_key is None:
                raise
            with self.engine.connect() as conn:
                return self._by_key(conn, run.idempotency_key), False
        return run.id, True

    @staticmethod
    def _by_key(conn: Any, key: str | None) -> str:
        found = conn.execute(
            select(WorkflowRun.id).where(WorkflowRun.idempotency_key == key)
        ).scalar_one()
        return str(found)

    # -- reads ----------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord | None:
        try:
            key = uuid.UUID(str(run_id))
        except ValueError:
            return None
        with Session(self.engine) as session:
            row = session.get(WorkflowRun, key)
            return None if row is None else _run_record(row)

    def list_runs(
        self, workflow: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        query = select(WorkflowRun).order_by(WorkflowRun.created_at.desc()).limit(limit)
        if workflow:
            query = query.where(WorkflowRun.workflow == workflow)
        if status:
            query = query.where(WorkflowRun.status == str(status))
        with Session(self.engine) as session:
            return [_run_record(r) for r in session.scalars(query)]

    def get_steps(self, run_id: str) -> list[StepRecord]:
        key = uuid.UUID(str(run_id))
        with Session(self.engine) as session:
            rows = list(
                session.scalars(select(TaskRun).where(TaskRun.run_id == key).order_by(TaskRun.id))
            )
            attempts = session.scalars(
                select(TaskAttempt)
                .where(TaskAttempt.task_run_id.in_([r.id for r in rows]))
                .order_by(TaskAttempt.task_run_id, TaskAttempt.attempt)
            )
            log: dict[int, list[AttemptRecord]] = {}
            for a in attempts:
                log.setdefault(a.task_run_id, []).append(
                    AttemptRecord(
                        a.attempt,
                        a.status,
                        a.worker,
                        a.error,
                        a.traceback,
                        a.started_at,
                        a.finished_at,
                    )
                )
            return [_step_record(r, log.get(r.id, [])) for r in rows]

    # -- control --------------------------------------------------------------------------------

    def cancel_run(self, run_id: str, reason: str) -> bool:
        """Cancel a run that has not ended: its unstarted steps become ``cancelled``."""
        return self.end_run(run_id, "cancelled", reason, unstarted="cancelled")

    def fail_run(self, run_id: str, error: str, unstarted: str = "cancelled") -> bool:
        """End a run as failed (e.g. its deadline passed); steps not started get ``unstarted``."""
        return self.end_run(run_id, "failed", error, unstarted)

    def end_run(self, run_id: str, status: str, error: str, unstarted: str) -> bool:
        """End a run that has not ended, in one transaction; its unstarted steps get
        ``unstarted``. False if the run had already ended."""
        key = uuid.UUID(str(run_id))
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == key, WorkflowRun.status.not_in(TERMINAL_RUNS))
                .values(status=status, error=error, finished_at=text("now()"))
                .returning(WorkflowRun.id)
            ).first()
            if changed is None:
                return False
            conn.execute(
                update(TaskRun)
                .where(TaskRun.run_id == key, TaskRun.status.in_(("pending", "retrying")))
                .values(status=unstarted, error=error, finished_at=text("now()"))
            )
        return True

    def end_failed(self, run_id: str, step_id: str | None, error: str) -> bool:
        """Fail a run whose failure was decided but not recorded: the failing step (if it has
        not ended) becomes ``failed``, steps not started ``skipped``. False if it had ended."""
        key = uuid.UUID(str(run_id))
        if step_id is not None:
            with self.engine.begin() as conn:
                conn.execute(
                    update(TaskRun)
                    .where(
                        TaskRun.run_id == key,
                        TaskRun.step_id == step_id,
                        TaskRun.status.not_in(TERMINAL_STEPS),
                    )
                    .values(status="failed", error=error, finished_at=text("now()"))
                )
        if not self.end_run(run_id, "failed", error, unstarted="skipped"):
            return False
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkflowRun).where(WorkflowRun.id == key).values(error_step=step_id)
            )
        return True

    def transition(
        self,
        run_id: str,
        source: tuple[str, ...],
        target: str,
        effect: Callable[[], None] | None = None,
    ) -> bool:
        """Move a run from one of ``source`` to ``target``; False if it was in no such status.

        ``effect`` (the same change in Redis) runs while the run's row is locked, before the
        commit: control actions on one run (pause, resume) are applied in one order everywhere,
        and an effect that fails leaves the status as it was.
        """
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == uuid.UUID(str(run_id)), WorkflowRun.status.in_(source))
                .values(status=target)
                .returning(WorkflowRun.id)
            ).first()
            if changed is not None and effect is not None:
                effect()
        return changed is not None

    def mark_published(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == uuid.UUID(str(run_id)))
                .values(published_at=text("now()"))
            )

    def add_recovery(self, run_id: str, done: list[str]) -> int:
        """Record an in-place recovery with the steps already done; returns its epoch (1, 2...)."""
        with self.engine.begin() as conn:
            length = conn.execute(
                text(
                    "UPDATE workflow_runs SET recoveries = recoveries || CAST(:done AS JSONB) "
                    "WHERE id = CAST(:id AS UUID) RETURNING jsonb_array_length(recoveries)"
                ),
                {"done": json.dumps([done]), "id": str(run_id)},
            ).scalar_one()
        return int(length)

    def add_event(self, run_id: str, kind: str, detail: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(RunEvent).values(run_id=uuid.UUID(str(run_id)), kind=kind, detail=detail)
            )

    def events(self, run_id: str) -> list[tuple[datetime, str, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(RunEvent.at, RunEvent.kind, RunEvent.detail)
                .where(RunEvent.run_id == uuid.UUID(str(run_id)))
                .order_by(RunEvent.id)
            )
            return [(r[0], r[1], r[2]) for r in rows]

    # -- reconciliation -------------------------------------------------------------------------

    def settled_runs(self, limit: int = 100) -> list[tuple[str, str]]:
        """Unfinished runs whose steps have all ended, with the status the run should have."""
        rows = self._query(_SETTLED, {"limit": limit})
        return [(str(r[0]), r[1]) for r in rows]

    def finish_settled(self, run_id: str, status: str, output: Any, error: str | None) -> bool:
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(WorkflowRun)
                .where(
                    WorkflowRun.id == uuid.UUID(run_id), WorkflowRun.status.not_in(TERMINAL_RUNS)
                )
                .values(status=status, output=output, error=error, finished_at=text("now()"))
                .returning(WorkflowRun.id)
            ).first()
        return changed is not None

    def unpublished_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Pending runs recorded over ``older_than`` seconds ago and never published, oldest
        first."""
        rows = self._query(_UNPUBLISHED, {"age": older_than, "limit": limit})
        return [str(r[0]) for r in rows]

    def suspect_steps(self, older_than: float, limit: int = 500) -> list[tuple[str, str, int]]:
        """Steps recorded as running for longer than ``older_than`` seconds, in unfinished runs."""
        rows = self._query(_SUSPECT, {"age": older_than, "limit": limit})
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    def orphaned_steps(self, older_than: float, limit: int = 100) -> list[tuple[str, str, int]]:
        """Steps recorded as running for longer than ``older_than`` seconds in runs that ended
        (a failed run's branch whose worker died before recording its end)."""
        rows = self._query(_ORPHANED, {"age": older_than, "limit": limit})
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    def fail_orphan(self, run_id: str, step_id: str, error: str) -> bool:
        """End an orphaned running step as failed; False if it had ended meanwhile."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(TaskRun)
                .where(
                    TaskRun.run_id == uuid.UUID(str(run_id)),
                    TaskRun.step_id == step_id,
                    TaskRun.status == "running",
                )
                .values(status="failed", error=error, finished_at=text("now()"))
                .returning(TaskRun.id)
            ).first()
        return changed is not None

    def stalled_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Running runs with nothing running and no step start or end for ``older_than`` s."""
        rows = self._query(_STALLED, {"age": older_than, "limit": limit})
        return [str(r[0]) for r in rows]

    def late_retries(self, older_than: float, limit: int = 500) -> list[tuple[str, str, int]]:
        """Steps ``retrying`` for longer than ``older_than`` seconds (since the failed attempt
        ended), in pending or running runs: (run id, step id, attempts)."""
        rows = self._query(_LATE_RETRIES, {"age": older_than, "limit": limit})
        return [(str(r[0]), r[1], int(r[2])) for r in rows]

    def _query(self, sql: Any, params: dict[str, Any]) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sql, params))

    # -- dead letters ---------------------------------------------------------------------------

    def dead_letters(self, limit: int = 50, include_replayed: bool = False) -> list[DeadLetter]:
        query = select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
        if not include_replayed:
            query = query.where(DeadLetter.replayed_at.is_(None))
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
            session.expunge_all()
            return rows

    def dead_letter(self, letter_id: int) -> DeadLetter | None:
        with Session(self.engine) as session:
            row = session.get(DeadLetter, letter_id)
            if row is not None:
                session.expunge(row)
            return row

    def mark_replayed(self, letter_id: int, replayed: bool = True) -> bool:
        """Mark a dead letter replayed (or not, after a replay that failed); False if it
        already was (so one letter is replayed once, however many replay it at once)."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(DeadLetter)
                .where(
                    DeadLetter.id == letter_id,
                    DeadLetter.replayed_at.is_(None)
                    if replayed
                    else DeadLetter.replayed_at.is_not(None),
                )
                .values(replayed_at=text("now()") if replayed else None)
                .returning(DeadLetter.id)
            ).first()
        return changed is not None

    def unfinished_task_ids(self, run_id: str) -> list[str]:
        key = uuid.UUID(str(run_id))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TaskRun.celery_task_id).where(
                    TaskRun.run_id == key, TaskRun.status.not_in(TERMINAL_STEPS)
                )
            )
            return [r[0] for r in rows]


# The reconciler's queries cost the same with 10 or 10 million rows of history: they start from
# the runs not yet ended (ix_workflow_runs_unfinished, or the index on status) and look at each
# one's steps by run id, through the index of unfinished steps (ix_task_runs_unfinished) where
# they can; unpublished runs have an index of their own (migration 0003). ``OFFSET 0``
# keeps each look a probe per run: without it the planner may turn it into a hash join over all
# of task_runs, or start from the unfinished steps, which include those that runs ended without
# (a failed run's steps that never started), and so grow with history.
_SETTLED = text("""
SELECT r.id,
       CASE WHEN NOT EXISTS (SELECT FROM task_runs t
                             WHERE t.run_id = r.id AND t.status <> 'succeeded' OFFSET 0)
            THEN 'succeeded'
            WHEN EXISTS (SELECT FROM task_runs t
                         WHERE t.run_id = r.id AND t.status = 'failed' OFFSET 0)
            THEN 'failed'
            ELSE 'cancelled' END
FROM workflow_runs r
WHERE r.status IN ('pending', 'running', 'paused')
  -- every step has ended (asked first: it rules out almost every run), and there is a step
  AND CASE WHEN EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id
                        AND t.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
                        OFFSET 0)
           THEN false
           ELSE EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id OFFSET 0) END
LIMIT :limit
""")
_UNPUBLISHED = text("""
SELECT id FROM workflow_runs
WHERE published_at IS NULL AND status = 'pending'
  AND created_at < now() - make_interval(secs => :age)
ORDER BY created_at LIMIT :limit
""")
_SUSPECT = text("""
SELECT r.id, t.step_id, t.attempts FROM workflow_runs r
CROSS JOIN LATERAL (SELECT t.step_id, t.attempts FROM task_runs t
                    WHERE t.run_id = r.id AND t.status = 'running'
                      AND t.started_at < now() - make_interval(secs => :age) OFFSET 0) t
WHERE r.status = 'running'
LIMIT :limit
""")
# from the unfinished-steps index (its predicate repeated so the planner uses it), never from
# the ended runs, which are most of the history
_ORPHANED = text("""
SELECT t.run_id, t.step_id, t.attempts FROM task_runs t JOIN workflow_runs r ON r.id = t.run_id
WHERE t.status = 'running' AND t.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
  AND t.started_at < now() - make_interval(secs => :age)
  AND r.status IN ('succeeded', 'failed', 'cancelled')
LIMIT :limit
""")
_LATE_RETRIES = text("""
SELECT r.id, t.step_id, t.attempts FROM workflow_runs r
CROSS JOIN LATERAL (SELECT t.step_id, t.attempts FROM task_runs t
                    WHERE t.run_id = r.id AND t.status = 'retrying'
                      AND t.finished_at < now() - make_interval(secs => :age) OFFSET 0) t
WHERE r.status IN ('pending', 'running')
LIMIT :limit
""")
# No step started or ended for :age: the latest of published_at and every step's start and end
_STALLED = text("""
SELECT r.id FROM workflow_runs r
WHERE r.status IN ('pending', 'running') AND r.published_at IS NOT NULL
  AND r.published_at < now() - make_interval(secs => :age)
  AND EXISTS (SELECT FROM task_runs t WHERE t.run_id = r.id AND t.status = 'pending' OFFSET 0)
  AND NOT EXISTS (SELECT FROM task_runs t
                  WHERE t.run_id = r.id AND t.status IN ('running', 'retrying') OFFSET 0)
  AND NOT EXISTS (SELECT FROM task_runs t
                  WHERE t.run_id = r.id
                    AND greatest(t.started_at, t.finished_at) >= now() - make_interval(secs => :age)
                  OFFSET 0)
LIMIT :limit
""")


def _run_values(run: NewRun) -> dict[str, Any]:
    return {
        "id": uuid.UUID(run.id),
        "workflow": run.workflow,
        "workflow_version": run.version,
        "status": "pending",
        "inputs": run.inputs,
        "trigger": run.trigger,
        "idempotency_key": run.idempotency_key,
        "correlation_id": run.correlation_id,
        "tenant_id": run.tenant_id,
        "parent_run_id": uuid.UUID(run.parent_run_id) if run.parent_run_id else None,
        "done_steps": run.done_steps,
    }


def _step_values(run_id: str, step: NewStep) -> dict[str, Any]:
    at = datetime.now(UTC)
    return {
        "run_id": uuid.UUID(run_id),
        "step_id": step.step_id,
        "task_name": step.task_name,
        "celery_task_id": step.celery_task_id,
        "status": step.status,
        "attempts": 0,
        "result": step.result if step.has_result else None,
        "queued_at": at,
        "finished_at": at if step.status != "pending" else None,
    }


def _run_record(row: WorkflowRun) -> RunRecord:
    return RunRecord(
        id=str(row.id),
        workflow=row.workflow,
        workflow_version=row.workflow_version,
        status=row.status,
        inputs=revive(row.inputs),
        output=revive(row.output),
        error=row.error,
        error_step=row.error_step,
        trigger=row.trigger,
        idempotency_key=row.idempotency_key,
        correlation_id=row.correlation_id,
        tenant_id=row.tenant_id,
        parent_run_id=str(row.parent_run_id) if row.parent_run_id else None,
        done_steps=list(row.done_steps or []),
        recoveries=list(row.recoveries or []),
        published_at=row.published_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _step_record(row: TaskRun, attempts: list[AttemptRecord]) -> StepRecord:
    return StepRecord(
        step_id=row.step_id,
        task=row.task_name,
        status=row.status,
        attempts=row.attempts,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        result=revive(row.result),
        celery_task_id=row.celery_task_id,
        queued_at=row.queued_at,
        attempt_log=attempts,
    )
