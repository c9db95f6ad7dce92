"""a run's priority, kept for the messages published after its start

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

``run_workflow(..., priority=9)`` orders the run's messages in their queues. The priority rode
only in the messages' context, so a run started later than its submit (one that waited for a
concurrency slot), recovered under a new epoch, retried, or started as a child, published at
priority 0. ``workflow_runs.priority`` keeps it (NULL: none given, 0).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("priority", sa.SmallInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("workflow_runs", "priority")
