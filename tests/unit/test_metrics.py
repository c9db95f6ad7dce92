"""Unit tests for orchestrator.metrics: history rows and breaker states become Prometheus text."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from orchestrator.metrics import (
    TASK_BUCKETS,
    HistoryCollector,
    breaker_family,
    histogram,
    run_families,
    task_families,
)

Sample = tuple[str, dict[str, str], float]


def samples(*families: object) -> list[Sample]:
    return [(s.name, s.labels, s.value) for f in families for s in f.samples]  # type: ignore[attr-defined]


def test_breaker_states_map_to_0_closed_1_half_open_2_open() -> None:
    family = breaker_family([("db", "closed"), ("api", "half_open"), ("s3", "open"), ("x", "?")])
    assert samples(family) == [
        ("orchestrator_circuit_breaker_state", {"breaker": "db"}, 0.0),
        ("orchestrator_circuit_breaker_state", {"breaker": "api"}, 1.0),
        ("orchestrator_circuit_breaker_state", {"breaker": "s3"}, 2.0),
    ]


def test_ended_runs_are_counted_and_unended_ones_are_active() -> None:
    rows = [
        ("etl", "succeeded", 5),
        ("etl", "failed", 1),
        ("etl", "running", 2),
        ("etl", "pending", 1),
    ]
    ended, active = run_families(rows)
    assert samples(ended) == [
        ("orchestrator_flow_runs_processed_total", {"workflow": "etl", "status": "succeeded"}, 5),
        ("orchestrator_flow_runs_processed_total", {"workflow": "etl", "status": "failed"}, 1),
    ]
    assert samples(active) == [("orchestrator_active_runs", {}, 3.0)]


def test_steps_that_never_ran_are_scheduled_but_not_completed() -> None:
    # rows: status, scheduled, ran (attempts > 0), retries
    rows = [("succeeded", 4, 4, 2), ("skipped", 3, 0, 0), ("running", 1, 1, 0)]
    scheduled, completed, retries = task_families(rows)
    assert samples(scheduled) == [("orchestrator_tasks_scheduled_total", {}, 8.0)]
    assert samples(completed) == [
        ("orchestrator_tasks_completed_total", {"status": "succeeded"}, 4.0)
    ]
    assert samples(retries) == [("orchestrator_retry_attempts_total", {}, 2.0)]


def test_histogram_rows_become_cumulative_buckets() -> None:
    counts = [0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    family = histogram("t_seconds", "doc", "task", [("load", *counts, 2, 0.7)], TASK_BUCKETS)
    got = {(n, s.get("le")): v for n, s, v in samples(family)}
    assert got[("t_seconds_bucket", "0.01")] == 0 and got[("t_seconds_bucket", "0.05")] == 1
    assert got[("t_seconds_bucket", "1")] == 2 and got[("t_seconds_bucket", "+Inf")] == 2
    assert got[("t_seconds_count", None)] == 2 and got[("t_seconds_sum", None)] == 0.7


def test_a_scrape_while_postgresql_is_down_says_so_and_still_reports_breakers() -> None:
    def down() -> Engine:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    collector = HistoryCollector(down, breakers=lambda: [("db", "open")])
    assert samples(*collector.collect()) == [
        ("orchestrator_history_up", {}, 0.0),
        ("orchestrator_circuit_breaker_state", {"breaker": "db"}, 2.0),
    ]
