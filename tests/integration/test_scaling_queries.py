"""The reconciler's queries and ``/metrics`` cost the same with a handful or with hundreds of
thousands of rows of finished history.

In a database of its own (no worker's reconciler may act on these made-up runs): one unfinished
run of each case the reconciler looks for, and a backlog of runs in progress. Each query is
explained (``EXPLAIN (ANALYZE, BUFFERS)``); then 100,000 finished runs with 500,000 steps and
20,000 replayed dead letters are added, each table in one ``INSERT ... SELECT``, some runs with
steps they ended without (never started, or whose worker died). Explained again, no query may
scan a history table sequentially, expect many rows at any plan node, or read many more pages
than it did before: page counts are deterministic where times are not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from prometheus_client.core import Metric
from sqlalchemy import Engine, TextClause, create_engine, text
from sqlalchemy.engine import make_url

from orchestrator.ops import metrics
from orchestrator.ops.metrics import HistoryCollector
from orchestrator.stores.postgres import reconciliation
from orchestrator.stores.postgres.housekeeping import fold_deltas
from orchestrator.stores.postgres.migrate import upgrade
from orchestrator.stores.postgres.store import HistoryStore

pytestmark = pytest.mark.integration

HISTORY_RUNS = 100_000  # finished runs, 5 steps each
BACKLOG = 500  # runs in progress, 3 steps each
HISTORY_TABLES = {"workflow_runs", "task_runs", "task_attempts", "dead_letters"}
LEASE, STALL = 30.0, 300.0  # seconds, as the reconciler asks

QUERIES: dict[str, tuple[TextClause, dict[str, Any]]] = {
    "settled_runs": (reconciliation.SETTLED, {"limit": 100}),
    "unpublished_runs": (reconciliation.UNPUBLISHED, {"age": LEASE, "limit": 100}),
    "suspect_steps": (reconciliation.SUSPECT, {"age": LEASE, "limit": 500}),
    "stalled_runs": (reconciliation.STALLED, {"age": STALL, "limit": 100}),
    "late_retries": (reconciliation.LATE_RETRIES, {"age": LEASE, "limit": 500}),
    "metric totals": (metrics._TOTALS, {}),
    "active runs": (metrics._ACTIVE, {}),
    "dead letters": (metrics._DEAD, {}),
}

# name: (run status, published how long ago (None: never), steps as
# (step, status, attempts, started how long ago, finished how long ago)); ages in seconds
HOUR = 3600
CASES: dict[str, tuple[str, int | None, list[tuple[str, str, int, int | None, int | None]]]] = {
    "settled_ok": ("running", HOUR, [("a", "succeeded", 1, HOUR, HOUR)]),
    "settled_failed": (
        "running",
        HOUR,
        [
            ("a", "succeeded", 1, HOUR, HOUR),
            ("b", "failed", 3, HOUR, HOUR),
            ("c", "skipped", 0, None, HOUR),
        ],
    ),
    "settled_cancelled": (
        "paused",
        HOUR,
        [("a", "succeeded", 1, HOUR, HOUR), ("b", "cancelled", 0, None, HOUR)],
    ),
    "unpublished": ("pending", None, [("a", "pending", 0, None, None)]),
    "fresh_unpublished": ("pending", None, [("a", "pending", 0, None, None)]),
    "suspect": (
        "running",
        HOUR,
        [("a", "succeeded", 1, HOUR, HOUR), ("b", "running", 2, HOUR, None)],
    ),
    "fresh_running": ("running", HOUR, [("a", "running", 1, 0, None)]),
    "stalled": (
        "running",
        HOUR,
        [("a", "succeeded", 1, HOUR, HOUR), ("b", "pending", 0, None, None)],
    ),
    "busy": ("running", HOUR, [("a", "succeeded", 1, HOUR, 0), ("b", "pending", 0, None, None)]),
    "late_retry": (
        "running",
        HOUR,
        [("a", "retrying", 1, HOUR, HOUR), ("b", "pending", 0, None, None)],
    ),
    "fresh_retry": ("running", HOUR, [("a", "retrying", 1, HOUR, 0)]),
    "ended_with_steps_left": (
        "failed",
        HOUR,
        [
            ("a", "running", 1, HOUR, None),
            ("b", "pending", 0, None, None),
            ("c", "retrying", 1, HOUR, HOUR),
        ],
    ),
    "no_steps": ("running", HOUR, []),
}
CREATED = {"fresh_unpublished": 0}  # created an hour ago unless said here


def case_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scaling/{name}"))


_CASE_RUN = text("""
INSERT INTO workflow_runs (id, workflow, workflow_version, status, inputs, trigger, done_steps,
                           created_at, published_at)
VALUES (CAST(:id AS UUID), 'case', 'v1', :status, '{}', 'api', '[]',
        now() - make_interval(secs => :created),
        now() - make_interval(secs => CAST(:published AS float8)))
""")
_CASE_STEP = text("""
INSERT INTO task_runs (run_id, step_id, task_name, celery_task_id, status, attempts,
                       started_at, finished_at)
VALUES (CAST(:run AS UUID), :step, 'tasks.case', :celery_id, :status, :attempts,
        now() - make_interval(secs => CAST(:started AS float8)),
        now() - make_interval(secs => CAST(:finished AS float8)))
""")
# runs in progress that no query returns: a step done just now, one running, one waiting
_BACKLOG = [
    text("""
INSERT INTO workflow_runs (id, workflow, workflow_version, status, inputs, trigger, done_steps,
                           created_at, started_at, published_at)
SELECT CAST(md5('backlog' || i) AS UUID), 'backlog', 'v1', 'running', '{}', 'api', '[]',
       now(), now(), now()
FROM generate_series(1, :n) i
"""),
    text("""
INSERT INTO task_runs (run_id, step_id, task_name, celery_task_id, status, attempts,
                       started_at, finished_at)
SELECT CAST(md5('backlog' || i) AS UUID), s.step, 'tasks.backlog', md5('backlog' || i) || s.step,
       s.status, s.attempts, s.started, s.finished
FROM generate_series(1, :n) i,
     (VALUES ('a', 'succeeded', 1, now(), now()), ('b', 'running', 1, now(), NULL),
             ('c', 'pending', 0, NULL, NULL)) s(step, status, attempts, started, finished)
"""),
]
_UNREPLAYED = """
INSERT INTO dead_letters (task, reason) VALUES ('tasks.case', 'exhausted'), ('tasks.case', 'lost')
"""
# Finished runs (1 in 50 failed, 1 in 101 cancelled, 1 in 7 with a retry), 5 steps each; a
# failed run keeps a step never started and one retrying, a cancelled one a step whose worker
# died: steps that are not ended, in runs that are.
_HISTORY = [
    text("""
INSERT INTO workflow_runs (id, workflow, workflow_version, status, inputs, trigger, done_steps,
                           created_at, started_at, finished_at, published_at)
SELECT CAST(lpad(to_hex(i), 32, '0') AS UUID), 'history-' || i % 20, 'v1',
       CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 101 = 0 THEN 'cancelled'
            ELSE 'succeeded' END,
       '{}', 'api', '[]', t, t, t + (i % 97) * interval '1 second', t
FROM generate_series(1, :n) i, LATERAL (SELECT now() - interval '30 days'
                                               + i * interval '10 seconds' AS t) x
"""),
    text("""
INSERT INTO task_runs (run_id, step_id, task_name, celery_task_id, status, attempts,
                       queued_at, started_at, finished_at)
SELECT CAST(lpad(to_hex(i), 32, '0') AS UUID), 's' || s, 'tasks.history' || s,
       lpad(to_hex(i * 8 + s), 16, '0'),
       CASE WHEN i % 50 = 0 AND s = 5 THEN 'pending' WHEN i % 50 = 0 AND s = 4 THEN 'retrying'
            WHEN i % 101 = 0 AND s = 5 THEN 'running' ELSE 'succeeded' END,
       1 + (i % 7 = 0)::int, t, t, t + interval '1 second'
FROM generate_series(1, :n) i, generate_series(1, 5) s,
     LATERAL (SELECT now() - interval '30 days' + i * interval '10 seconds' AS t) x
"""),
    text("""
INSERT INTO task_attempts (task_run_id, attempt, status, started_at, finished_at)
SELECT id, attempts, status, started_at, finished_at FROM task_runs
WHERE task_name LIKE 'tasks.history%' AND id % 25 = 0
"""),
    text("""
INSERT INTO dead_letters (task, reason, created_at, replayed_at)
SELECT 'tasks.history1', 'exhausted', now() - interval '30 days', now() - interval '29 days'
FROM generate_series(1, :n / 5)
"""),
]


@dataclass
class Explained:
    plan: dict[str, Any]

    def nodes(self, node: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        node = self.plan if node is None else node
        yield node
        for child in node.get("Plans", []):
            yield from self.nodes(child)

    @property
    def pages(self) -> int:
        return int(self.plan["Shared Hit Blocks"] + self.plan["Shared Read Blocks"])

    @property
    def most_rows(self) -> float:
        return max(float(n["Plan Rows"]) for n in self.nodes())

    def history_scans(self) -> list[str]:
        return [
            n["Relation Name"]
            for n in self.nodes()
            if "Seq Scan" in n["Node Type"] and n.get("Relation Name") in HISTORY_TABLES
        ]

    def __str__(self) -> str:
        def lines(node: dict[str, Any], depth: int) -> Iterator[str]:
            where = node.get("Index Name") or node.get("Relation Name") or ""
            yield f"{'  ' * depth}{node['Node Type']} {where} rows={node['Plan Rows']}"
            for child in node.get("Plans", []):
                yield from lines(child, depth + 1)

        return "\n".join(lines(self.plan, 0))


def explain(engine: Engine) -> dict[str, Explained]:
    found = {}
    with engine.connect() as conn:
        for name, (query, params) in QUERIES.items():
            sql = text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query.text)
            found[name] = Explained(conn.execute(sql, params).scalar_one()[0]["Plan"])
    return found


def analyze(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


@pytest.fixture(scope="module")
def engine(servers: dict[str, str]) -> Iterator[Engine]:
    """A database of its own, migrated to head."""
    base = make_url(servers["ORCHESTRATOR_DATABASE_URL"])
    name = f"orchestrator_scaling_{uuid.uuid4().hex[:8]}"
    url = base.set(drivername="postgresql+psycopg", database=name)
    upgrade(url.render_as_string(hide_password=False))
    engine = create_engine(url)
    yield engine
    engine.dispose()
    admin = base.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_cases(engine: Engine) -> None:
    with engine.begin() as conn:
        for name, (status, published, steps) in CASES.items():
            conn.execute(
                _CASE_RUN,
                {
                    "id": case_id(name),
                    "status": status,
                    "created": CREATED.get(name, HOUR),
                    "published": published,
                },
            )
            for step, step_status, attempts, started, finished in steps:
                conn.execute(
                    _CASE_STEP,
                    {
                        "run": case_id(name),
                        "step": step,
                        "celery_id": f"{name}-{step}",
                        "status": step_status,
                        "attempts": attempts,
                        "started": started,
                        "finished": finished,
                    },
                )
        for query in _BACKLOG:
            conn.execute(query, {"n": BACKLOG})
        conn.execute(text(_UNREPLAYED))


def reconciler_answers(history: HistoryStore) -> dict[str, Any]:
    return {
        "settled_runs": sorted(history.settled_runs()),
        "unpublished_runs": history.unpublished_runs(LEASE),
        "suspect_steps": history.suspect_steps(LEASE),
        "stalled_runs": history.stalled_runs(STALL),
        "late_retries": history.late_retries(LEASE),
    }


def samples(families: Iterator[Metric]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in families
        for s in family.samples
    }


def test_reconciler_and_metrics_queries_do_not_grow_with_finished_history(engine: Engine) -> None:
    # Given one unfinished run of each kind, a backlog of runs in progress, and no history
    add_cases(engine)
    analyze(engine)
    history = HistoryStore(engine.url.render_as_string(hide_password=False))
    expected = {
        "settled_runs": sorted(
            [
                (case_id("settled_ok"), "succeeded"),
                (case_id("settled_failed"), "failed"),
                (case_id("settled_cancelled"), "cancelled"),
            ]
        ),
        "unpublished_runs": [case_id("unpublished")],
        "suspect_steps": [(case_id("suspect"), "b", 2)],
        "stalled_runs": [case_id("stalled")],
        "late_retries": [(case_id("late_retry"), "a", 1)],
    }
    assert reconciler_answers(history) == expected
    fold_deltas(engine)
    before = explain(engine)

    # When 100,000 finished runs with 500,000 steps are added
    started = time.monotonic()
    with engine.begin() as conn:
        for query in _HISTORY:
            conn.execute(query, {"n": HISTORY_RUNS})
    analyze(engine)
    loaded = time.monotonic() - started
    fold_deltas(engine)
    after = explain(engine)

    # Then each query starts from the unfinished work: no sequential scan of a history table,
    # no plan node expecting more rows than the unfinished work has, and about the pages read
    unfinished_rows = 4 * (BACKLOG + len(CASES))
    report = {
        name: f"pages {before[name].pages} -> {after[name].pages}, "
        f"most rows {before[name].most_rows:g} -> {after[name].most_rows:g}"
        for name in QUERIES
    }
    print(f"history loaded in {loaded:.1f}s", *report.items(), sep="\n")
    for name, plan in after.items():
        assert plan.history_scans() == [], f"{name}:\n{plan}"
        assert plan.most_rows <= unfinished_rows, f"{name}:\n{plan}"
        assert plan.pages <= 2 * before[name].pages + 50, f"{name}: {report[name]}\n{plan}"
    # and they still find the same runs and steps (those left in ended runs are not theirs)
    assert reconciler_answers(history) == expected
    # and /metrics counts the whole history (kept as totals while it was written)
    got = samples(HistoryCollector(lambda: engine).collect())
    history.dispose()

    def value(name: str, **labels: str) -> float:
        return got.get((name, frozenset(labels.items())), 0.0)

    failed = len(range(50, HISTORY_RUNS + 1, 50))
    cancelled = sum(1 for i in range(101, HISTORY_RUNS + 1, 101) if i % 50)
    assert value("orchestrator_history_up") == 1.0
    assert sum(
        value("orchestrator_flow_runs_processed_total", workflow=f"history-{w}", status="succeeded")
        for w in range(20)
    ) == (HISTORY_RUNS - failed - cancelled)
    assert value(
        "orchestrator_flow_runs_processed_total", workflow="history-0", status="failed"
    ) == (
        failed / 2  # i % 50 == 0: half of them are i % 20 == 0
    )
    assert value("orchestrator_active_runs") == BACKLOG + sum(
        1 for status, *_ in CASES.values() if status in ("pending", "running", "paused")
    )
    assert value("orchestrator_tasks_scheduled_total") >= 5 * HISTORY_RUNS
    assert value("orchestrator_dead_letter_queue_size") == 2
    with engine.connect() as conn:
        attempts = conn.execute(text("SELECT count(*) FROM task_attempts")).scalar_one()
    assert attempts > 0 and attempts == sum(
        v for (name, _), v in got.items() if name == "orchestrator_task_execution_seconds_count"
    )
