"""Schedule control in PostgreSQL: each scheduled workflow's pause flag and last fire time.

The table ``schedule_states`` (migration 0008) has a row per workflow whose schedule fired or
was paused or resumed. Beat's fire task reads it under the workflow's schedule lock
(:meth:`~orchestrator.stores.postgres.housekeeping.Housekeeping.schedule_slot`) and moves
``last_fire_time`` forward only (``GREATEST``), so a late or duplicate message never moves it
back. ``runs_by_key`` tells a backfill which fire times already have their run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, text

from orchestrator.records import ScheduleState
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.models import WorkflowRun

_COLUMNS = "workflow, paused, last_fire_time, updated_at"
_RECORD_FIRE = text("""
INSERT INTO schedule_states AS s (workflow, last_fire_time) VALUES (:workflow, :fire)
ON CONFLICT (workflow) DO UPDATE
SET last_fire_time = GREATEST(s.last_fire_time, EXCLUDED.last_fire_time), updated_at = now()
""")
_SET_PAUSED = text(f"""
INSERT INTO schedule_states AS s (workflow, paused, last_fire_time)
VALUES (:workflow, :paused, :until)
ON CONFLICT (workflow) DO UPDATE
SET paused = EXCLUDED.paused, updated_at = now(),
    last_fire_time = GREATEST(s.last_fire_time, EXCLUDED.last_fire_time)
RETURNING {_COLUMNS}
""")


def _state(row: Sequence[Any]) -> ScheduleState:
    workflow, paused, last_fire_time, updated_at = row
    return ScheduleState(str(workflow), bool(paused), last_fire_time, updated_at)


class ScheduleStates(Database):
    """The schedule-control methods of the history store (the ``RunHistory`` port)."""

    def schedule_states(self) -> dict[str, ScheduleState]:
        """Every workflow's recorded schedule state, by workflow name."""
        with self.engine.connect() as conn:
            rows = conn.execute(text(f"SELECT {_COLUMNS} FROM schedule_states")).all()
        return {row[0]: _state(row) for row in rows}

    def schedule_state(self, workflow: str) -> ScheduleState:
        """``workflow``'s schedule state (not paused, never fired when it has no row)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(f"SELECT {_COLUMNS} FROM schedule_states WHERE workflow = :w"),
                {"w": workflow},
            ).first()
        return ScheduleState(workflow) if row is None else _state(row)

    def record_fire(self, workflow: str, fire_time: datetime) -> None:
        """Note ``fire_time`` as handled (the record only moves forward)."""
        with self.engine.begin() as conn:
            conn.execute(_RECORD_FIRE, {"workflow": workflow, "fire": fire_time})

    def set_schedule_paused(
        self, workflow: str, paused: bool, handled_until: datetime | None = None
    ) -> ScheduleState:
        """Pause or resume ``workflow``'s schedule; ``handled_until`` also moves its last fire
        time forward (a resume marks the fire times that passed while paused as handled)."""
        params = {"workflow": workflow, "paused": paused, "until": handled_until}
        with self.engine.begin() as conn:
            return _state(conn.execute(_SET_PAUSED, params).one())

    def runs_by_key(self, keys: list[str]) -> dict[str, str]:
        """The runs that exist for these idempotency keys: key -> run id."""
        if not keys:
            return {}
        query = select(WorkflowRun.idempotency_key, WorkflowRun.id).where(
            WorkflowRun.idempotency_key.in_(keys)
        )
        with self.engine.connect() as conn:
            return {str(key): str(run_id) for key, run_id in conn.execute(query).all()}
