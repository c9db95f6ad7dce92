"""Sleeping and waiting steps, and the signals sent to runs, in PostgreSQL (the ``WaitStore``
port; tables of migration 0006).

A parked step's due time lives here, not only in Redis: the reconciler finds what is due (or
whose signal arrived) with :meth:`PostgresWaits.due_waits` and wakes it, whatever Redis lost.
It shares the history store's per-process engine (no second connection pool).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    delete,
    exists,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID, insert

from orchestrator.records import ParkedStep, SignalRecord
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.postgres.connection import Database, reachable
from orchestrator.stores.postgres.models import TaskRun, WorkflowRun

metadata = MetaData()
step_waits = Table(
    "step_waits",
    metadata,
    Column("run_id", UUID(as_uuid=True), primary_key=True),
    Column("step_id", String(220), primary_key=True),
    Column("signal", String(200)),
    Column("due_at", DateTime(timezone=True)),
    Column("message", JSONB),
    Column("created_at", DateTime(timezone=True)),
)
run_signals = Table(
    "run_signals",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("run_id", UUID(as_uuid=True)),
    Column("name", String(200)),
    Column("payload", JSONB(none_as_null=True)),
    Column("sender", String(300)),
    Column("size", Integer),
    Column("created_at", DateTime(timezone=True)),
)
WAKEABLE = (RunStatus.PENDING.value, RunStatus.RUNNING.value)
"""Runs whose parked steps the reconciler wakes (a paused run's wait until it resumes)."""


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _parked(row: Any) -> ParkedStep:
    due = None if row.due_at is None else row.due_at.timestamp()
    return ParkedStep(str(row.run_id), row.step_id, row.signal, due, dict(row.message))


def _signal(row: Any) -> SignalRecord:
    return SignalRecord(
        row.id, str(row.run_id), row.name, row.payload, row.sender, row.size, row.created_at
    )


@reachable
class PostgresWaits:
    """The ``WaitStore`` on the history database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def url(self) -> str:
        return self._db.url

    @property
    def engine(self) -> Engine:
        return self._db.engine

    def park(
        self,
        run_id: str,
        step_id: str,
        signal: str | None,
        due: float | None,
        message: dict[str, Any],
    ) -> float | None:
        """Keep the step parked with ``message`` (the latest delivery's); a step parked before
        keeps its first due time. Returns the due time in force."""
        stmt = insert(step_waits).values(
            run_id=uuid.UUID(run_id),
            step_id=step_id,
            signal=signal,
            due_at=_time(due),
            message=message,
            created_at=text("now()"),
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=["run_id", "step_id"], set_={"message": stmt.excluded.message}
        ).returning(step_waits.c.due_at)
        with self.engine.begin() as conn:
            found = conn.execute(upsert).scalar_one()
        return None if found is None else float(found.timestamp())

    def unpark(self, run_id: str, step_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(step_waits).where(
                    step_waits.c.run_id == uuid.UUID(run_id), step_waits.c.step_id == step_id
                )
            )

    def parked(self, run_id: str) -> list[ParkedStep]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(step_waits)
                .where(step_waits.c.run_id == uuid.UUID(run_id))
                .order_by(step_waits.c.created_at)
            )
            return [_parked(r) for r in rows]

    def waiting_for_signal(self, run_id: str, name: str) -> list[ParkedStep]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(step_waits).where(
                    step_waits.c.run_id == uuid.UUID(run_id), step_waits.c.signal == name
                )
            )
            return [_parked(r) for r in rows]

    def due_waits(self, cutoff: float, limit: int = 500) -> list[ParkedStep]:
        """Parked steps of unfinished, unpaused runs that are due by ``cutoff`` or whose signal
        arrived by then (their wake-up should have come; it was lost, e.g. with Redis)."""
        at = _time(cutoff)
        arrived = exists().where(
            run_signals.c.run_id == step_waits.c.run_id,
            run_signals.c.name == step_waits.c.signal,
            run_signals.c.created_at <= at,
        )
        query = (
            select(step_waits)
            .join(WorkflowRun, WorkflowRun.id == step_waits.c.run_id)
            .where(
                WorkflowRun.status.in_(WAKEABLE),
                or_(step_waits.c.due_at <= at, and_(step_waits.c.signal.is_not(None), arrived)),
            )
            .order_by(step_waits.c.due_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_parked(r) for r in conn.execute(query)]

    def end_waits(self, run_id: str, reason: str) -> list[str]:
        """A run ended: its parked steps are ``cancelled`` and unparked; their ids."""
        key = uuid.UUID(run_id)
        with self.engine.begin() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    delete(step_waits)
                    .where(step_waits.c.run_id == key)
                    .returning(step_waits.c.step_id)
                )
            ]
            if ids:
                conn.execute(
                    update(TaskRun)
                    .where(
                        TaskRun.run_id == key,
                        TaskRun.step_id.in_(ids),
                        TaskRun.status == StepStatus.RUNNING.value,
                    )
                    .values(
                        status=StepStatus.CANCELLED.value, error=reason, finished_at=text("now()")
                    )
                )
        return ids

    def skip_parked(self, run_id: str, step_id: str, reason: str) -> bool:
        """A parked step timed out with ``on_timeout="skip"``: unparked, its running row
        ``skipped`` with when (a skip event moves only steps that never started)."""
        key = uuid.UUID(run_id)
        with self.engine.begin() as conn:
            conn.execute(
                delete(step_waits).where(
                    step_waits.c.run_id == key, step_waits.c.step_id == step_id
                )
            )
            changed = conn.execute(
                update(TaskRun)
                .where(
                    TaskRun.run_id == key,
                    TaskRun.step_id == step_id,
                    TaskRun.status == StepStatus.RUNNING.value,
                )
                .values(status=StepStatus.SKIPPED.value, error=reason, finished_at=text("now()"))
            )
        return bool(changed.rowcount)

    def add_signal(
        self, run_id: str, name: str, payload: Any, sender: str | None, size: int
    ) -> SignalRecord | None:
        """Keep a signal for a run that has not ended; None (nothing written) otherwise."""
        key = uuid.UUID(run_id)
        with self.engine.begin() as conn:
            alive = conn.execute(
                select(WorkflowRun.status).where(WorkflowRun.id == key).with_for_update()
            ).scalar()
            if alive is None or RunStatus(alive).terminal:
                return None
            row = conn.execute(
                insert(run_signals)
                .values(
                    run_id=key,
                    name=name,
                    payload=payload,
                    sender=sender,
                    size=size,
                    created_at=text("now()"),
                )
                .returning(*run_signals.c)
            ).one()
        return _signal(row)

    def signals(self, run_id: str, name: str | None = None) -> list[SignalRecord]:
        query = select(run_signals).where(run_signals.c.run_id == uuid.UUID(run_id))
        if name is not None:
            query = query.where(run_signals.c.name == name)
        with self.engine.connect() as conn:
            return [_signal(r) for r in conn.execute(query.order_by(run_signals.c.id))]
