"""Submitting a run and reading runs back: its spec, its row, its steps and attempts, its
events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.records import AttemptRecord, NewRun, NewStep, RunRecord, StepRecord
from orchestrator.status import RunStatus
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.mapping import (
    attempt_record,
    run_record,
    run_values,
    step_record,
    step_values,
)
from orchestrator.stores.postgres.models import (
    RunEvent,
    TaskAttempt,
    TaskRun,
    WorkflowRun,
    WorkflowSpecRow,
)
from orchestrator.stores.postgres.statuses import STEPS_ENDED

# built once: a statement built per call costs more to build and look up than to send
_NEW_SPEC = pg_insert(WorkflowSpecRow).on_conflict_do_nothing()
_NEW_RUN = (
    pg_insert(WorkflowRun)
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(WorkflowRun.id)
)
_NEW_RUN_PUBLISHED = _NEW_RUN.values(published_at=text("now()"))
_NEW_STEPS = insert(TaskRun)
_RUN_BY_ID = select(WorkflowRun.__table__).where(WorkflowRun.id == bindparam("id"))


class Runs(Database):
    """Submit and read runs."""

    def create_run(self, run: NewRun, steps: list[NewStep]) -> tuple[str, bool]:
        """Write the run and its steps in one transaction; (run id, created).

        With an idempotency key that is already taken, nothing is written and the existing run's
        id is returned with ``created=False`` (also when two submits race). A run recorded as
        ``published`` gets its ``published_at`` in the same transaction (``engine.submit``).
        """
        try:
            with self.engine.begin() as conn:
                spec = {"version": run.version, "workflow": run.workflow, "spec": run.spec}
                conn.execute(_NEW_SPEC, spec)
                statement = _NEW_RUN_PUBLISHED if run.published else _NEW_RUN
                inserted = conn.execute(statement, run_values(run)).first()
                if inserted is None:
                    existing = self._by_key(conn, run.idempotency_key)
                    return existing, False
                conn.execute(_NEW_STEPS, [step_values(run.id, s) for s in steps])
        except IntegrityError:
            if run.idempotency_key is None:
                raise
            with self.engine.connect() as conn:
                return self._by_key(conn, run.idempotency_key), False
        return run.id, True

    def add_steps(self, run_id: str, steps: list[NewStep]) -> None:
        """Add step rows to a run (the items of a ``for_each``); rows it has are kept."""
        with self.engine.begin() as conn:
            conn.execute(
                pg_insert(TaskRun).on_conflict_do_nothing(constraint="uq_task_runs_run_step"),
                [step_values(run_id, s) for s in steps],
            )

    @staticmethod
    def _by_key(conn: Any, key: str | None) -> str:
        found = conn.execute(
            select(WorkflowRun.id).where(WorkflowRun.idempotency_key == key)
        ).scalar_one()
        return str(found)

    def load_spec(self, version: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(WorkflowSpecRow.spec).where(WorkflowSpecRow.version == version)
            ).first()
        return None if row is None else dict(row[0])

    def get_run(self, run_id: str) -> RunRecord | None:
        try:
            key = uuid.UUID(str(run_id))
        except ValueError:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(_RUN_BY_ID, {"id": key}).first()
        return None if row is None else run_record(row)

    def list_runs(
        self, workflow: str | None = None, status: RunStatus | None = None, limit: int = 50
    ) -> list[RunRecord]:
        query = select(WorkflowRun).order_by(WorkflowRun.created_at.desc()).limit(limit)
        if workflow:
            query = query.where(WorkflowRun.workflow == workflow)
        if status:
            query = query.where(WorkflowRun.status == status.value)
        with Session(self.engine) as session:
            return [run_record(r) for r in session.scalars(query)]

    def children(self, run_id: str) -> list[RunRecord]:
        """The runs of child workflows that steps of ``run_id`` started, oldest first."""
        query = (
            select(WorkflowRun)
            .where(
                WorkflowRun.parent_run_id == uuid.UUID(str(run_id)),
                WorkflowRun.parent_step_id.is_not(None),
            )
            .order_by(WorkflowRun.created_at)
        )
        with Session(self.engine) as session:
            return [run_record(r) for r in session.scalars(query)]

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
                log.setdefault(a.task_run_id, []).append(attempt_record(a))
            return [step_record(r, log.get(r.id, [])) for r in rows]

    def events(self, run_id: str) -> list[tuple[datetime, str, str | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(RunEvent.at, RunEvent.kind, RunEvent.detail)
                .where(RunEvent.run_id == uuid.UUID(str(run_id)))
                .order_by(RunEvent.id)
            )
            return [(r[0], r[1], r[2]) for r in rows]

    def unfinished_task_ids(self, run_id: str) -> list[str]:
        key = uuid.UUID(str(run_id))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(TaskRun.celery_task_id).where(
                    TaskRun.run_id == key, TaskRun.status.not_in(STEPS_ENDED)
                )
            )
            return [r[0] for r in rows]
