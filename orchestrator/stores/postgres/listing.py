"""The console's questions: runs found by workflow, status, time and search, a page at a time;
runs and step durations over time.

A listing reads one range of one index of migration 0004 (newest first, after the last run of
the page before), so page 1000 costs what page 1 does, with a million runs or ten. A search
finds a run id prefix as a range of the primary key, an idempotency key or a correlation id
through their own indexes. The charts read the runs created in their window through the index
on ``created_at``, and each one's steps through ``(run_id, step_id)``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select, text, tuple_
from sqlalchemy.orm import Session

from orchestrator.records import RunCount, RunQuery, RunRecord, StepDurations
from orchestrator.status import RunStatus
from orchestrator.stores.postgres.connection import Database
from orchestrator.stores.postgres.mapping import run_record
from orchestrator.stores.postgres.models import WorkflowRun

RUN_COUNTS = text("""
SELECT to_timestamp(floor(extract(epoch FROM created_at) / :bucket) * :bucket) AS at,
       status, count(*)
FROM workflow_runs WHERE created_at >= :since
GROUP BY 1, 2 ORDER BY 1, 2
""")

STEP_DURATIONS = text("""
SELECT at, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds), max(seconds)
FROM (SELECT to_timestamp(floor(extract(epoch FROM t.started_at) / :bucket) * :bucket) AS at,
             extract(epoch FROM t.finished_at - t.started_at)::float8 AS seconds
      FROM workflow_runs r JOIN task_runs t ON t.run_id = r.id
      WHERE r.created_at >= :since AND t.started_at IS NOT NULL
        AND t.finished_at IS NOT NULL) s
GROUP BY at ORDER BY at
""")


class Listing(Database):
    """Listings and charts of runs."""

    def find_runs(self, query: RunQuery, limit: int = 50) -> list[RunRecord]:
        """Runs that match ``query``, newest first (ties: the greater id first), at most
        ``limit``."""
        found = (
            select(WorkflowRun)
            .where(*_conditions(query))
            .order_by(WorkflowRun.created_at.desc(), WorkflowRun.id.desc())
            .limit(limit)
        )
        with Session(self.engine) as session:
            return [run_record(r) for r in session.scalars(found)]

    def run_counts(self, since: datetime, bucket_seconds: int) -> list[RunCount]:
        """Runs created since ``since`` per bucket of ``bucket_seconds`` and status."""
        with self.engine.connect() as conn:
            rows = conn.execute(RUN_COUNTS, {"since": since, "bucket": bucket_seconds})
            return [RunCount(r[0], RunStatus(r[1]), int(r[2])) for r in rows]

    def step_durations(self, since: datetime, bucket_seconds: int) -> list[StepDurations]:
        """How long the ended steps of runs created since ``since`` took, per bucket of
        ``bucket_seconds`` of their start: count, median, 95th percentile, longest."""
        with self.engine.connect() as conn:
            rows = conn.execute(STEP_DURATIONS, {"since": since, "bucket": bucket_seconds})
            return [
                StepDurations(r[0], int(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in rows
            ]


def _conditions(query: RunQuery) -> list[ColumnElement[bool]]:
    run = WorkflowRun
    found: list[ColumnElement[bool]] = []
    if query.workflow is not None:
        found.append(run.workflow == query.workflow)
    if query.status is not None:
        found.append(run.status == query.status.value)
    if query.since is not None:
        found.append(run.created_at >= query.since)
    if query.until is not None:
        found.append(run.created_at < query.until)
    if query.after is not None:
        at, run_id = query.after
        found.append(tuple_(run.created_at, run.id) < tuple_(at, _uuid(run_id)))
    if query.search is not None:
        found.append(_search(query))
    return found


def _search(query: RunQuery) -> ColumnElement[bool]:
    matches: list[ColumnElement[bool]] = [
        WorkflowRun.idempotency_key == query.search,
        WorkflowRun.correlation_id == query.search,
    ]
    span = query.id_range
    if span is not None:
        matches.append(WorkflowRun.id.between(uuid.UUID(span[0]), uuid.UUID(span[1])))
    return or_(*matches)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
