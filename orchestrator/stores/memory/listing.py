"""The console's questions to the in-memory history: the twin of ``stores.postgres.listing``
(runs found by workflow, status, time and search, a page at a time; counts and step durations
over time)."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime

from orchestrator.records import RunCount, RunQuery, RunRecord, StepDurations
from orchestrator.status import RunStatus
from orchestrator.stores.memory.rows import RunRow


class Listing:
    """Listings over the runs of a :class:`~.history.MemoryHistory`."""

    lock: threading.RLock
    runs: dict[str, RunRow]

    def find_runs(self, query: RunQuery, limit: int = 50) -> list[RunRecord]:
        """Runs that match ``query``, newest first (ties: the greater id first), at most
        ``limit``."""
        with self.lock:
            rows = [r for r in self.runs.values() if _matches(r, query)]
            rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
            return [r.record() for r in rows[:limit]]

    def run_counts(self, since: datetime, bucket_seconds: int) -> list[RunCount]:
        """Runs created since ``since`` per bucket of ``bucket_seconds`` and status."""
        counts: dict[tuple[datetime, RunStatus], int] = {}
        with self.lock:
            for row in self.runs.values():
                if row.created_at >= since:
                    key = (_bucket(row.created_at, bucket_seconds), row.status)
                    counts[key] = counts.get(key, 0) + 1
        return [RunCount(at, status, n) for (at, status), n in sorted(counts.items())]

    def step_durations(self, since: datetime, bucket_seconds: int) -> list[StepDurations]:
        """How long the ended steps of runs created since ``since`` took, per bucket of
        ``bucket_seconds`` of their start: count, median, 95th percentile, longest."""
        taken: dict[datetime, list[float]] = {}
        with self.lock:
            for row in self.runs.values():
                if row.created_at < since:
                    continue
                for step in row.steps.values():
                    if step.started_at is not None and step.finished_at is not None:
                        seconds = (step.finished_at - step.started_at).total_seconds()
                        taken.setdefault(_bucket(step.started_at, bucket_seconds), []).append(
                            seconds
                        )
        return [
            StepDurations(at, len(d), _percentile(d, 0.5), _percentile(d, 0.95), max(d))
            for at, d in sorted(taken.items())
        ]


def _matches(row: RunRow, query: RunQuery) -> bool:
    checks = (
        query.workflow is None or row.workflow == query.workflow,
        query.status is None or row.status == query.status,
        query.since is None or row.created_at >= query.since,
        query.until is None or row.created_at < query.until,
        query.after is None or (row.created_at, row.id) < query.after,
    )
    return all(checks) and (query.search is None or _found(row, query))


def _found(row: RunRow, query: RunQuery) -> bool:
    span = query.id_range
    return (
        row.idempotency_key == query.search
        or row.correlation_id == query.search
        or (span is not None and span[0] <= row.id <= span[1])
    )


def _bucket(at: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(math.floor(at.timestamp() / seconds) * seconds, UTC)


def _percentile(values: list[float], fraction: float) -> float:
    """Linearly interpolated between the closest ranks, as PostgreSQL's ``percentile_cont``."""
    ordered = sorted(values)
    where = fraction * (len(ordered) - 1)
    low = math.floor(where)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (where - low)
