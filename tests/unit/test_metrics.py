"""Unit tests for orchestrator.ops.metrics: history rows and breakers become Prometheus text."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from orchestrator.ops.metrics import (
    RUN_BUCKETS,
    TASK_BUCKETS,
    HistoryCollector,
    breaker_family,
    histogram,
    histogram_rows,
    run_families,
    task_families,
)

Sample = tuple[str, dict[str, str], float]
ROOT = Path(__file__).resolve().parents[2]


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


def test_steps_scheduled_completed_by_final_status_and_retries() -> None:
    # steps that ran and ended, by status; one not ended is no completion, nor is a zero
    ran = [("succeeded", 4.0), ("skipped", 0.0), ("running", 1.0)]
    scheduled, completed, retries = task_families(8.0, ran, 2.0)
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


def test_observations_stored_per_smallest_bucket_become_cumulative_rows() -> None:
    # (label, smallest bucket bound the duration fits in, count, seconds); above the last bound
    # is Infinity; a bound no longer among the buckets counts in the next one up
    observations = [
        ("etl", "0.5", 2, 0.6),
        ("etl", "5", 1, 4.0),
        ("etl", "Infinity", 1, 30000.0),
        ("etl", "3", 1, 2.5),
        ("other", "1", 3, 2.1),
    ]
    rows = histogram_rows(observations, RUN_BUCKETS)
    assert rows[0] == ("etl", 2.0, 2.0, 4.0, *[4.0] * 9, 5.0, 30007.1)
    assert rows[1] == ("other", 0.0, *[3.0] * 11, 3.0, 2.1)
    family = histogram("h_seconds", "doc", "workflow", rows, RUN_BUCKETS)
    got = {(n, s.get("workflow"), s.get("le")): v for n, s, v in samples(family)}
    assert (
        got[("h_seconds_bucket", "etl", "5")] == 4 and got[("h_seconds_bucket", "etl", "+Inf")] == 5
    )


def test_a_scrape_while_postgresql_is_down_says_so_and_still_reports_breakers() -> None:
    def down() -> Engine:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    collector = HistoryCollector(down, breakers=lambda: [("db", "open")])
    assert samples(*collector.collect()) == [
        ("orchestrator_history_up", {}, 0.0),
        ("orchestrator_circuit_breaker_state", {"breaker": "db"}, 2.0),
    ]


def test_the_trigger_functions_bucket_durations_as_the_histograms_do() -> None:
    # migration 0003 writes its bucket bounds into SQL; a change to them needs a new migration
    path = next((ROOT / "orchestrator/stores/postgres/migrations/versions").glob("0003_*.py"))
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert (migration.RUN_BUCKETS, migration.TASK_BUCKETS) == (RUN_BUCKETS, TASK_BUCKETS)
