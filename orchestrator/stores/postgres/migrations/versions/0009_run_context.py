"""a run's context kept with its history

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

``current_run.context.set`` changes a run's context in Redis; the batched history writer keeps
the whole context here (``context``, JSONB), with the version Redis gave the change
(``context_version``): an update with a lower version than the stored one is ignored, so events
of several workers written in any order leave the latest context. ``run.context()`` reads it
here once Redis no longer holds the run's context. Live workers and what steps wait for are
computed from Redis and need no table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("context", postgresql.JSONB(), nullable=True))
    op.add_column(
        "workflow_runs",
        sa.Column("context_version", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("workflow_runs", "context_version")
    op.drop_column("workflow_runs", "context")
