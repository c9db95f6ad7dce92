"""Prometheus metrics derived from the history tables when they are scraped.

Every number comes from PostgreSQL, not from counters kept in worker memory: the tables are
written by every prefork child, on every host, and by clients (a cancel), so a scrape of any one
worker gives the exact totals of the whole deployment, and they survive worker restarts. The
cost is a few aggregate queries per scrape, in one read-only snapshot. Because each worker
reports the same global series, aggregate across instances with ``max``, never ``sum``.

Counters count rows, so deleting old history lowers them; Prometheus treats that as a reset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.logs import scrub

log = logging.getLogger("orchestrator.metrics")

RUN_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "half-open": 1.0, "open": 2.0}
RUN_ENDED = ("succeeded", "failed", "cancelled")
RUN_ACTIVE = ("pending", "running", "paused")
STEP_ENDED = ("succeeded", "failed", "skipped", "cancelled")

BreakerSource = Callable[[], Iterable[tuple[str, str]]]


def _histogram_sql(select: str, buckets: Sequence[float]) -> str:
    """``label, count(d <= b) for each bucket, count, sum`` over ``select`` (label, d)."""
    counts = ", ".join(f"count(*) FILTER (WHERE d <= {float(b)!r})" for b in buckets)
    return f"SELECT label, {counts}, count(*), COALESCE(sum(d), 0) FROM ({select}) s GROUP BY label"


_RUNS = text("SELECT workflow, status, count(*) FROM workflow_runs GROUP BY workflow, status")
_RUN_SECONDS = text(
    _histogram_sql(
        "SELECT workflow AS label, EXTRACT(EPOCH FROM finished_at - started_at) AS d"
        " FROM workflow_runs WHERE status IN ('succeeded', 'failed')"
        " AND started_at IS NOT NULL AND finished_at IS NOT NULL",
        RUN_BUCKETS,
    )
)
# A step whose result a retried run carried over (succeeded with no attempt) was never scheduled.
_TASKS = text("""
SELECT status,
       count(*) FILTER (WHERE NOT (status = 'succeeded' AND attempts = 0)),
       count(*) FILTER (WHERE attempts > 0),
       COALESCE(sum(GREATEST(attempts - 1, 0)), 0)
FROM task_runs GROUP BY status
""")
_TASK_SECONDS = text(
    _histogram_sql(
        "SELECT r.task_name AS label, EXTRACT(EPOCH FROM a.finished_at - a.started_at) AS d"
        " FROM task_attempts a JOIN task_runs r ON r.id = a.task_run_id"
        " WHERE a.started_at IS NOT NULL AND a.finished_at IS NOT NULL",
        TASK_BUCKETS,
    )
)
_DEAD = text("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")


def histogram(
    name: str, doc: str, label: str, rows: Iterable[Sequence[Any]], buckets: Sequence[float]
) -> HistogramMetricFamily:
    """A histogram family from rows of (label value, cumulative bucket counts..., count, sum)."""
    family = HistogramMetricFamily(name, doc, labels=[label])
    for row in rows:
        value, counts, total, seconds = row[0], row[1:-2], row[-2], row[-1]
        pairs = [(_le(b), float(c)) for b, c in zip(buckets, counts, strict=True)]
        family.add_metric([value], [*pairs, ("+Inf", float(total))], float(seconds))
    return family


def _le(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def run_families(rows: Iterable[Sequence[Any]]) -> Iterator[Metric]:
    """Runs ended by workflow and status, and runs not yet ended, from (workflow, status, n)."""
    ended = CounterMetricFamily(
        "orchestrator_flow_runs_processed",
        "Workflow runs that ended, by workflow and status.",
        labels=["workflow", "status"],
    )
    active = 0
    for workflow, status, count in rows:
        if status in RUN_ENDED:
            ended.add_metric([workflow, status], float(count))
        elif status in RUN_ACTIVE:
            active += int(count)
    yield ended
    yield GaugeMetricFamily(
        "orchestrator_active_runs",
        "Workflow runs not yet ended (pending, running or paused).",
        value=float(active),
    )


def task_families(rows: Iterable[Sequence[Any]]) -> Iterator[Metric]:
    """Steps scheduled, ended by status, and retry attempts, from rows of ``_TASKS``."""
    completed = CounterMetricFamily(
        "orchestrator_tasks_completed",
        "Steps that ran and ended, by final status.",
        labels=["status"],
    )
    scheduled = retries = 0
    for status, queued, ran, extra in rows:
        scheduled += int(queued)
        retries += int(extra)
        if status in STEP_ENDED and ran:
            completed.add_metric([status], float(ran))
    yield CounterMetricFamily(
        "orchestrator_tasks_scheduled",
        "Steps scheduled to run, in every run.",
        value=float(scheduled),
    )
    yield completed
    yield CounterMetricFamily(
        "orchestrator_retry_attempts",
        "Step attempts after the first (retries).",
        value=float(retries),
    )


def breaker_family(pairs: Iterable[tuple[str, str]]) -> GaugeMetricFamily:
    """``orchestrator_circuit_breaker_state`` from (breaker name, state) pairs."""
    family = GaugeMetricFamily(
        "orchestrator_circuit_breaker_state",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
        labels=["breaker"],
    )
    for name, state in pairs:
        value = BREAKER_VALUES.get(str(state))
        if value is None:
            log.warning("circuit breaker %r has unknown state %r; not reported", name, state)
            continue
        family.add_metric([name], value)
    return family


class HistoryCollector(Collector):
    """Collects every orchestrator metric from the history tables (and breakers) per scrape."""

    def __init__(self, engine: Callable[[], Engine], breakers: BreakerSource | None = None):
        self._engine = engine
        self._breakers = breakers
        self._readable = True  # warn when reading starts failing, not on every scrape

    def collect(self) -> Iterator[Metric]:
        families = self._read_history()
        yield GaugeMetricFamily(
            "orchestrator_history_up",
            "1 when the history tables could be read for this scrape.",
            value=1.0 if families else 0.0,
        )
        yield from families
        if self._breakers is not None:
            yield from self._breaker_states()

    def _read_history(self) -> list[Metric]:
        """The history families, or ``[]`` when PostgreSQL fails (logged when that starts)."""
        try:
            families = self._from_history()
        except SQLAlchemyError as exc:
            if self._readable:
                detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[:1]
                log.warning(
                    "metrics: history tables unreadable: %s: %s",
                    type(exc).__name__,
                    scrub(" ".join(detail)),
                )
            self._readable = False
            return []
        if not self._readable:
            log.info("metrics: history tables readable again")
        self._readable = True
        return families

    def _from_history(self) -> list[Metric]:
        with self._engine().connect() as raw:
            conn = raw.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with conn.begin():
                return self._query(conn)

    @staticmethod
    def _query(conn: Connection) -> list[Metric]:
        families = [*run_families(conn.execute(_RUNS))]
        families.append(
            histogram(
                "orchestrator_run_execution_seconds",
                "Duration of ended runs, start to end.",
                "workflow",
                conn.execute(_RUN_SECONDS),
                RUN_BUCKETS,
            )
        )
        families.extend(task_families(conn.execute(_TASKS)))
        families.append(
            histogram(
                "orchestrator_task_execution_seconds",
                "Duration of each step attempt, by task.",
                "task",
                conn.execute(_TASK_SECONDS),
                TASK_BUCKETS,
            )
        )
        families.append(
            GaugeMetricFamily(
                "orchestrator_dead_letter_queue_size",
                "Dead letters not yet replayed.",
                value=float(conn.execute(_DEAD).scalar_one()),
            )
        )
        return families

    def _breaker_states(self) -> Iterator[Metric]:
        assert self._breakers is not None
        try:
            pairs = list(self._breakers())
        except Exception as exc:  # a breaker store outage must not fail the whole scrape
            log.warning("metrics: circuit breakers unreadable: %s", type(exc).__name__)
            return
        yield breaker_family(pairs)
