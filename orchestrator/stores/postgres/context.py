"""A run's context in history: the ``context`` column of ``workflow_runs`` (migration 0009).

The batched writer applies :class:`~orchestrator.records.ContextEvent` s (:func:`write_contexts`):
each carries the whole context after one change and the version Redis gave it; a row takes an
event only if its version is higher than the last one taken (a conditional update), so the events
of several workers land in any order and leave the latest context. The event's keys are merged
over the stored ones (keys are never deleted): a context Redis lost mid-run (a restart without
persistence) keeps its earlier keys here. :class:`Contexts` reads it back for ``run.context()``
once Redis no longer holds it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Connection, text

from orchestrator import codec
from orchestrator.records import ContextEvent, Event
from orchestrator.stores.postgres.connection import Database

_WRITE = text("""
UPDATE workflow_runs
SET context = COALESCE(context, '{}'::jsonb) || CAST(:context AS JSONB), context_version = :version
WHERE id = CAST(:run_id AS UUID) AND context_version < :version
""")
_READ = text("SELECT context FROM workflow_runs WHERE id = :run_id")


def write_contexts(conn: Connection, events: list[Event]) -> None:
    """Write the latest context of each run among ``events`` (one statement per run)."""
    latest: dict[str, ContextEvent] = {}
    for event in events:
        if isinstance(event, ContextEvent):
            kept = latest.get(event.run_id)
            if kept is None or kept.version < event.version:
                latest[event.run_id] = event
    if latest:
        conn.execute(
            _WRITE,
            [
                {"run_id": e.run_id, "version": e.version, "context": document(e.context)}
                for e in latest.values()
            ],
        )


def document(values: dict[str, str]) -> str:
    """A JSON object of already encoded values, ready for a JSONB column."""
    members = ",".join(f"{json.dumps(k)}:{v}" for k, v in sorted(values.items()))
    return codec.for_postgres(codec.Encoded("{" + members + "}"))


class Contexts(Database):
    """Read a run's context as history keeps it."""

    def run_context(self, run_id: str) -> dict[str, Any] | None:
        """The run's context as last written; None for a run that never set one."""
        try:
            key = uuid.UUID(str(run_id))
        except ValueError:
            return None
        with self.engine.connect() as conn:
            found = conn.execute(_READ, {"run_id": key}).scalar()
        return dict(codec.revive(found)) if isinstance(found, dict) else None
