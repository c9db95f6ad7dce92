"""indexes of the console's run listing

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

The console lists runs newest first, a page at a time after the last run of the page before
(keyset pagination on created_at, id), filtered by workflow, status or both, and finds runs by
correlation id (by run id prefix through the primary key, by idempotency key through its unique
index). Each listing reads one range of one index whatever the size of history, so the
single-column indexes on created_at, workflow and status become (…, created_at, id) ones (equal
lookups on workflow or status still use them), and correlation ids get a partial index.

The indexes are built ``CONCURRENTLY``: on a table of millions of runs, writers are not blocked
while they are built.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CORRELATED = "correlation_id IS NOT NULL"
NEW = {
    "ix_workflow_runs_created": ["created_at", "id"],
    "ix_workflow_runs_workflow_created": ["workflow", "created_at", "id"],
    "ix_workflow_runs_status_created": ["status", "created_at", "id"],
    "ix_workflow_runs_workflow_status_created": ["workflow", "status", "created_at", "id"],
}
OLD = {
    "ix_workflow_runs_created_at": ["created_at"],
    "ix_workflow_runs_workflow": ["workflow"],
    "ix_workflow_runs_status": ["status"],
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in NEW.items():
            op.create_index(name, "workflow_runs", columns, postgresql_concurrently=True)
        op.create_index(
            "ix_workflow_runs_correlation_id",
            "workflow_runs",
            ["correlation_id"],
            postgresql_where=sa.text(CORRELATED),
            postgresql_concurrently=True,
        )
        for name in OLD:
            op.drop_index(name, table_name="workflow_runs", postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in OLD.items():
            op.create_index(name, "workflow_runs", columns, postgresql_concurrently=True)
        op.drop_index(
            "ix_workflow_runs_correlation_id",
            table_name="workflow_runs",
            postgresql_concurrently=True,
        )
        for name in NEW:
            op.drop_index(name, table_name="workflow_runs", postgresql_concurrently=True)
