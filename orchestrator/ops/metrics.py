"""Prometheus metrics derived from the history tables when they are scraped.

Every number comes from PostgreSQL, not from counters kept in worker memory: the tables are
written by every prefork child, on every host, and by clients (a cancel), so a scrape of any one
worker gives the exact totals of the whole deployment, and they survive worker restarts. Because
each worker reports the same global series, aggregate across instances with ``max``, never
``sum``.

A scrape costs the same with 10 or 10 million rows of history. The counters and histograms are
totals that PostgreSQL keeps as history is written: a trigger on each history table appends what
each statement changed to ``metric_deltas`` (migration 0003), and :func:`fold_deltas` moves those
rows into ``metric_totals`` (each scrape does, so the deltas stay few; the reconciler may too).
A scrape reads the totals plus the deltas not folded yet, in one read-only snapshot; the gauges
count runs not ended and dead letters not replayed through partial indexes of those rows only.
Deleting old history does not lower the counters.
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
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from orchestrator.logs import scrub
from orchestrator.status import RUN_TERMINAL, STEP_TERMINAL
from orchestrator.stores.postgres.housekeeping import fold_deltas
from orchestrator.stores.postgres.statuses import SQL_RUNS_UNFINISHED

log = logging.getLogger("orchestrator.metrics")

# the same bounds are in migration 0003 (its trigger functions)
RUN_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "half-open": 1.0, "open": 2.0}

BreakerSource = Callable[[], Iterable[tuple[str, str]]]
RateLimitSource = Callable[[], Iterable[tuple[str, int]]]
QueueSource = Callable[[], Iterable[tuple[str, int]]]


# The totals, as (metric, key, part, n, amount), by ``metric`` (what the triggers count):
# ``runs_ended`` (key: workflow, part: status), ``run_seconds`` (workflow, bucket bound),
# ``steps_scheduled``, ``steps_completed`` (part: status), ``retries`` (n: attempts after the
# first) and ``task_seconds`` (key: task, part: bucket bound). A histogram observation counts
# under the smallest bucket bound it fits in (``Infinity`` above the last one); ``amount`` sums
# the seconds. A step whose result a retried run carried over (succeeded with no attempt) was
# never scheduled.
_TOTALS = text("""
SELECT metric, key, part, sum(n), sum(amount) FROM (
    SELECT metric, key, part, n, amount FROM metric_totals
    UNION ALL
    SELECT metric, key, part, n, amount FROM metric_deltas
) s GROUP BY metric, key, part
""")
# through the partial indexes of runs not ended and of dead letters not replayed
_ACTIVE = text(f"""
SELECT status, count(*) FROM workflow_runs
WHERE status IN {SQL_RUNS_UNFINISHED} GROUP BY status
""")
_DEAD = text("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
# through the partial index of pending runs never published (migration 0003): runs waiting in
# line for a concurrency slot (and, for an instant, runs being submitted)
_IN_LINE = text("""
SELECT workflow, count(*) FROM workflow_runs
WHERE status = 'pending' AND published_at IS NULL GROUP BY workflow
""")


def histogram_rows(
    observations: Iterable[Sequence[Any]], buckets: Sequence[float]
) -> list[tuple[Any, ...]]:
    """Rows for :func:`histogram`, from (label value, bucket bound, count, sum) per bucket.

    A bound not in ``buckets`` (they changed since it was counted) counts in the next one up."""
    per_label: dict[str, list[tuple[float, float, float]]] = {}
    for label, bound, count, seconds in observations:
        per_label.setdefault(label, []).append((float(bound), float(count), float(seconds)))
    rows = []
    for label, parts in sorted(per_label.items()):
        counts = [sum(n for bound, n, _ in parts if bound <= b) for b in buckets]
        total, seconds = sum(n for _, n, _ in parts), sum(s for *_, s in parts)
        rows.append((label, *counts, total, seconds))
    return rows


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
        if status in RUN_TERMINAL:
            ended.add_metric([workflow, status], float(count))
        else:
            active += int(count)
    yield ended
    yield GaugeMetricFamily(
        "orchestrator_active_runs",
        "Workflow runs not yet ended (pending, running or paused).",
        value=float(active),
    )


def task_families(
    scheduled: float, completed_by_status: Iterable[tuple[str, float]], retries: float
) -> Iterator[Metric]:
    """Steps scheduled, steps that ran and ended by status, and retry attempts."""
    completed = CounterMetricFamily(
        "orchestrator_tasks_completed",
        "Steps that ran and ended, by final status.",
        labels=["status"],
    )
    for status, ran in completed_by_status:
        if status in STEP_TERMINAL and ran:
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


def concurrency_family(rows: Iterable[Sequence[Any]]) -> GaugeMetricFamily:
    """Runs waiting for a concurrency slot, per workflow (from (workflow, count) rows)."""
    family = GaugeMetricFamily(
        "orchestrator_runs_waiting_for_concurrency",
        "Runs recorded but not started, waiting in line for a concurrency slot, per workflow.",
        labels=["workflow"],
    )
    for workflow, count in rows:
        family.add_metric([str(workflow)], float(count))
    return family


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


def rate_limit_family(pairs: Iterable[tuple[str, int]]) -> CounterMetricFamily:
    """``orchestrator_rate_limited_deferrals`` from (rate-limit key, deferrals) pairs: steps
    deferred because their key's window was full (each deferral counts; none is an attempt)."""
    family = CounterMetricFamily(
        "orchestrator_rate_limited_deferrals",
        "Step starts deferred by a full rate-limit window, per rate-limit key.",
        labels=["key"],
    )
    for key, count in pairs:
        family.add_metric([key], float(count))
    return family


def queue_family(pairs: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    """``orchestrator_queue_depth`` from (queue, messages waiting) pairs
    (``orchestrator.ops.queue_depth``; on Redis summed over the queue's priority lists)."""
    family = GaugeMetricFamily(
        "orchestrator_queue_depth",
        "Messages waiting in each broker queue (on Redis, all its priority lists together).",
        labels=["queue"],
    )
    for queue, depth in pairs:
        family.add_metric([queue], float(depth))
    return family


class HistoryCollector(Collector):
    """Collects every orchestrator metric from the history tables (and breakers) per scrape."""

    def __init__(
        self,
        engine: Callable[[], Engine],
        breakers: BreakerSource | None = None,
        rate_limits: RateLimitSource | None = None,
        queues: QueueSource | None = None,
    ):
        self._engine = engine
        self._breakers = breakers
        self._rate_limits = rate_limits
        self._queues = queues
        self._readable = True  # warn when reading starts failing, not on every scrape
        self._foldable = True

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
        if self._rate_limits is not None:
            yield from self._rate_limited()
        if self._queues is not None:
            yield from self._queue_depths()

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
        self._fold()
        with self._engine().connect() as raw:
            conn = raw.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with conn.begin():
                return self._query(conn)

    def _fold(self) -> None:
        """Fold the metric deltas first. Only an unreachable database fails the scrape: the
        totals read are right either way (e.g. for a database user that may only read)."""
        try:
            fold_deltas(self._engine())
        except OperationalError:
            raise
        except SQLAlchemyError as exc:
            if self._foldable:
                detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[:1]
                log.warning(
                    "metrics: cannot fold metric deltas (scrapes read more rows): %s: %s",
                    type(exc).__name__,
                    scrub(" ".join(detail)),
                )
            self._foldable = False
        else:
            self._foldable = True

    @staticmethod
    def _query(conn: Connection) -> list[Metric]:
        totals: dict[str, list[tuple[str, str, float, float]]] = {}
        for metric, key, part, n, amount in conn.execute(_TOTALS):
            totals.setdefault(metric, []).append((key, part, float(n), float(amount)))
        active = [("", status, n) for status, n in conn.execute(_ACTIVE)]
        ended = [(key, part, n) for key, part, n, _ in totals.get("runs_ended", [])]
        families = [*run_families(ended + active)]
        families.append(
            histogram(
                "orchestrator_run_execution_seconds",
                "Duration of ended runs, start to end.",
                "workflow",
                histogram_rows(totals.get("run_seconds", []), RUN_BUCKETS),
                RUN_BUCKETS,
            )
        )
        families.extend(
            task_families(
                sum(n for *_, n, _ in totals.get("steps_scheduled", [])),
                [(part, n) for _, part, n, _ in totals.get("steps_completed", [])],
                sum(n for *_, n, _ in totals.get("retries", [])),
            )
        )
        families.append(
            histogram(
                "orchestrator_task_execution_seconds",
                "Duration of each step attempt, by task.",
                "task",
                histogram_rows(totals.get("task_seconds", []), TASK_BUCKETS),
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
        families.append(concurrency_family(conn.execute(_IN_LINE)))
        return families

    def _breaker_states(self) -> Iterator[Metric]:
        assert self._breakers is not None
        yield from _from_store(self._breakers, breaker_family, "circuit breakers")

    def _rate_limited(self) -> Iterator[Metric]:
        assert self._rate_limits is not None
        yield from _from_store(self._rate_limits, rate_limit_family, "rate-limit deferrals")

    def _queue_depths(self) -> Iterator[Metric]:
        assert self._queues is not None
        yield from _from_store(self._queues, queue_family, "queue depths")


def _from_store(
    source: Callable[[], Iterable[Any]], family: Callable[[Any], Metric], what: str
) -> Iterator[Metric]:
    """``family`` of what ``source`` reads (Redis); nothing when it cannot be read: a store
    outage must not fail the whole scrape."""
    try:
        pairs = list(source())
    except Exception as exc:
        log.warning("metrics: %s unreadable: %s", what, type(exc).__name__)
        return
    yield family(pairs)
