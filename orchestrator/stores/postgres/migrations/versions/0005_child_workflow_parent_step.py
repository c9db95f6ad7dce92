"""the step of the parent run that started a child workflow's run

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A step with ``workflow:`` starts a run of another workflow (one per item with ``for_each``); the
child's row names its parent run (``parent_run_id``, as a retried run does) and the parent's
step (``parent_step_id``: ``per_doc`` or ``per_doc[3]``). ``run.children()`` finds a run's
children through the partial index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("parent_step_id", sa.String(220), nullable=True))
    op.create_index(
        "ix_workflow_runs_children",
        "workflow_runs",
        ["parent_run_id", "created_at"],
        postgresql_where=sa.text("parent_step_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_workflow_runs_children", table_name="workflow_runs")
    op.drop_column("workflow_runs", "parent_step_id")
