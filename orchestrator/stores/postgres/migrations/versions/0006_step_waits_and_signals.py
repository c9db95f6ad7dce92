"""sleeping and waiting steps (step_waits) and the signals sent to runs (run_signals)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

A ``sleep`` or ``wait_for`` step parks in ``step_waits`` (its due time, its signal and the
message that ends it) and holds no worker; the reconciler wakes what is due from here, so a
timer survives a worker and a Redis restart. ``run_signals`` keeps every signal sent to a run
(who, when, payload and its size), in order: a signal sent before its ``wait_for`` is reached
is kept, and ``current_run.signals(name)`` reads them. Both go with their run (cascade).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "step_waits",
        sa.Column(
            "run_id",
            UUID(as_uuid=True),
            sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("step_id", sa.String(220), primary_key=True),
        sa.Column("signal", sa.String(200), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.create_index(
        "ix_step_waits_due",
        "step_waits",
        ["due_at"],
        postgresql_where=sa.text("due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_step_waits_signal",
        "step_waits",
        ["run_id", "signal"],
        postgresql_where=sa.text("signal IS NOT NULL"),
    )
    op.create_table(
        "run_signals",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "run_id",
            UUID(as_uuid=True),
            sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("payload", JSONB(none_as_null=True), nullable=True),
        sa.Column("sender", sa.String(300), nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    )
    op.create_index("ix_run_signals_run_name", "run_signals", ["run_id", "name", "id"])


def downgrade() -> None:
    op.drop_index("ix_run_signals_run_name", table_name="run_signals")
    op.drop_table("run_signals")
    op.drop_index("ix_step_waits_signal", table_name="step_waits")
    op.drop_index("ix_step_waits_due", table_name="step_waits")
    op.drop_table("step_waits")
