"""SQLAlchemy 2 models of the history tables (design.md §2); Alembic migrations create them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import func

from orchestrator.stores.postgres.statuses import SQL_RUNS_UNFINISHED, SQL_STEPS_ENDED

# the predicates of migration 0003's partial indexes, which the reconciler's queries repeat
UNFINISHED_RUN = f"status IN {SQL_RUNS_UNFINISHED}"
UNFINISHED_STEP = f"status NOT IN {SQL_STEPS_ENDED}"


class Base(DeclarativeBase):
    pass


class WorkflowSpecRow(Base):
    """Each distinct workflow spec, by version hash, so workers can rebuild any run's plan."""

    __tablename__ = "workflow_specs"

    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    workflow_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    output: Mapped[Any] = mapped_column(JSONB(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    error_step: Mapped[str | None] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    correlation_id: Mapped[str | None] = mapped_column(String(200))
    tenant_id: Mapped[str | None] = mapped_column(String(200))
    parent_run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    parent_step_id: Mapped[str | None] = mapped_column(String(220))
    """The step of the parent run that started this run (a child workflow)."""
    priority: Mapped[int | None] = mapped_column(SmallInteger)
    """The run's priority (0..9), for steps without one of their own."""
    done_steps: Mapped[list[str]] = mapped_column(JSONB, default=list)
    recoveries: Mapped[list[list[str]]] = mapped_column(JSONB, default=list, server_default="[]")
    """Steps already done at each in-place recovery (epoch n uses entry n - 1)."""
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # the console's listings, newest first a page at a time (migration 0004)
        Index("ix_workflow_runs_created", "created_at", "id"),
        Index("ix_workflow_runs_workflow_created", "workflow", "created_at", "id"),
        Index("ix_workflow_runs_status_created", "status", "created_at", "id"),
        Index("ix_workflow_runs_workflow_status_created", "workflow", "status", "created_at", "id"),
        Index(
            "ix_workflow_runs_correlation_id",
            "correlation_id",
            postgresql_where=text("correlation_id IS NOT NULL"),
        ),
        # the reconciler's and /metrics' indexes cover unfinished runs only (migration 0003)
        Index(
            "ix_workflow_runs_unfinished",
            "status",
            "created_at",
            postgresql_where=text(UNFINISHED_RUN),
        ),
        Index(
            "ix_workflow_runs_unpublished_pending",
            "created_at",
            postgresql_where=text("status = 'pending' AND published_at IS NULL"),
        ),
        # a run's child workflows (migration 0005)
        Index(
            "ix_workflow_runs_children",
            "parent_run_id",
            "created_at",
            postgresql_where=text("parent_step_id IS NOT NULL"),
        ),
    )


class TaskRun(Base):
    __tablename__ = "task_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("workflow_runs.id", ondelete="CASCADE")
    )
    step_id: Mapped[str] = mapped_column(String(200))
    task_name: Mapped[str] = mapped_column(String(300))
    celery_task_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[Any] = mapped_column(JSONB(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("run_id", "step_id", name="uq_task_runs_run_step"),
        Index(
            "ix_task_runs_unfinished", "run_id", "status", postgresql_where=text(UNFINISHED_STEP)
        ),
    )


class TaskAttempt(Base):
    __tablename__ = "task_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    task_run_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("task_runs.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str | None] = mapped_column(String(300))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("task_run_id", "attempt", name="uq_task_attempts_attempt"),)


class RunEvent(Base):
    """What happened to a run besides its steps: pause, resume, cancel, retry, recovery."""

    __tablename__ = "run_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("workflow_runs.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    step_id: Mapped[str | None] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(300))
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    args: Mapped[Any] = mapped_column(JSONB(none_as_null=True), nullable=True)
    kwargs: Mapped[Any] = mapped_column(JSONB(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32), default="exhausted")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_dead_letters_unreplayed", "id", postgresql_where=text("replayed_at IS NULL")),
    )


class MetricTotal(Base):
    """A total behind ``/metrics`` (``orchestrator.ops.metrics``): a counter's value, or a
    histogram bucket's count and sum, by metric, label value (``key``) and ``part``."""

    __tablename__ = "metric_totals"

    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    part: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[float] = mapped_column(Float)


class MetricDelta(Base):
    """What one statement on the history tables added to the totals, not yet folded in.

    Written by triggers (migration 0003), never by Python: each statement on ``workflow_runs``,
    ``task_runs`` or ``task_attempts`` appends its rows' new contributions minus their old ones.
    """

    __tablename__ = "metric_deltas"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    metric: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    part: Mapped[str] = mapped_column(Text)
    n: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[float] = mapped_column(Float)
