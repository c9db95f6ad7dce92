"""schedule control: each scheduled workflow's pause flag and the last fire time beat handled

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

``schedule_states`` has one row per workflow whose schedule was fired, paused or resumed.
Beat's fire task reads it under the workflow's schedule lock: ``paused`` skips the fire, and
``last_fire_time`` (the latest fire time handled: started, skipped or caught up) tells which
fire times were missed while beat was down, so ``catchup`` survives a beat restart. A workflow
with no row has never fired and is not paused.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedule_states",
        sa.Column("workflow", sa.String(200), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_fire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("schedule_states")
