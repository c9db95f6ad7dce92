"""The fault suite's cluster: ``orchestrator.testing.Cluster`` plus faults and measurements.

A :class:`FaultCluster` always runs servers of its own (a test kills them), a supervisor that
replaces a worker that died by itself, the suite's settings (``DEFAULT_ENV``) and the effect
tables of ``tests/faults/effects.py``; it measures runs over SQL that survives PostgreSQL
restarts (:meth:`FaultCluster.observe`). The faults a test injects into a server are the
functions :func:`kill`, :func:`pause` and :func:`resume`; into a worker, ``Worker.kill`` or a
signal to one of ``Worker.pool()``.

Clusters are shared by the tests of a module that want the same servers (``conftest.cluster``):
:meth:`FaultCluster.begin` readies one for a test (its settings, empty effect tables, no worker
left) and :meth:`FaultCluster.end` stops that test's workers; a test that fails takes its cluster
with it (kept for its logs), so the next test gets fresh servers.

Two forms (``FAULTS_LONG=1``: the long one): :func:`sized` picks a test's size (runs, items,
kills, outage lengths) for the form; the default form keeps every fault kind and every count.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import psycopg
import redis

from orchestrator.dev.supervision import stop_services
from orchestrator.ops.reconciler import LOCK as RECONCILER_LOCK
from orchestrator.testing.cluster import Cluster
from orchestrator.testing.servers import ServerProcess
from orchestrator.testing.workers import Worker
from tests.faults.effects import KV_ENDED, KV_EXECUTIONS, TABLES
from tests.faults.outcome import Outcome

LONG = os.environ.get("FAULTS_LONG") == "1"
"""The long form of the suite (today's sizes or larger); the default form is sized for
``make test``."""
TASK_MODULES = "tests.faults.effects,tests.faults.shapes"
TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_ENV = {
    "ORCHESTRATOR_TASK_MODULES": TASK_MODULES,
    "ORCHESTRATOR_LEASE_SECONDS": "3",
    "ORCHESTRATOR_RECONCILE_INTERVAL": "1",
    "ORCHESTRATOR_STALL_TIMEOUT": "10",
    "ORCHESTRATOR_VISIBILITY_TIMEOUT": "20",
}
# the timings DEFAULT_ENV tunes; ``cluster(defaults=True)`` leaves them to orchestrator's defaults
# (lease 30 s, reconcile every 5 s, stall timeout 300 s, visibility timeout 3600 s)
TUNED = (
    "ORCHESTRATOR_LEASE_SECONDS",
    "ORCHESTRATOR_RECONCILE_INTERVAL",
    "ORCHESTRATOR_STALL_TIMEOUT",
    "ORCHESTRATOR_VISIBILITY_TIMEOUT",
)


def sized(short: float, long: float) -> Any:
    """A test's size in the form being run: ``short`` by default, ``long`` with FAULTS_LONG=1."""
    return long if LONG else short


# -- faults of a server ---------------------------------------------------------------------


def kill(server: ServerProcess) -> None:
    """``kill -9``; ``server.start()`` brings it back on the same port and data."""
    if server.proc is not None and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait(15)


def pause(server: ServerProcess) -> None:
    """SIGSTOP: the port accepts connections (the kernel's backlog) but nothing answers."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)


def resume(server: ServerProcess) -> None:
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGCONT)


# -- the cluster ----------------------------------------------------------------------------


class FaultCluster(Cluster):
    """Own Redis (and broker), PostgreSQL and workers for one test, supervised."""

    def __init__(
        self,
        name: str,
        env: dict[str, str] | None = None,
        separate_broker: bool = False,
        defaults: bool = False,
    ) -> None:
        settings = {k: v for k, v in DEFAULT_ENV.items() if not (defaults and k in TUNED)}
        super().__init__(
            {**settings, **(env or {})},
            name=name,
            own_servers=True,
            separate_broker=separate_broker,
            supervise=True,
        )
        (self.root / "workflows").mkdir()  # none: the tests define theirs in Python
        self.extra_env.setdefault("ORCHESTRATOR_WORKFLOWS_PATH", str(self.root / "workflows"))
        self.base_env = dict(self.extra_env)
        self.tag = ""  # the test's prefix of worker names (unique logs in a shared cluster)
        self.retired: list[Worker] = []  # workers of the tests before, stopped
        self._db: psycopg.Connection[Any] | None = None

    def start(self) -> FaultCluster:
        super().start()
        self.sql(TABLES)
        return self

    def begin(self, tag: str, env: dict[str, str] | None = None) -> FaultCluster:
        """Ready the cluster for a test: ``env`` over its own settings (for this process and the
        workers the test starts), empty effect tables, no reconciler lock left by a worker of
        the test before (it would delay this test's recoveries by up to three intervals), an
        empty default queue."""
        self.tag = tag
        self.extra_env = {**self.base_env, **(env or {})}
        self.activate()
        self.sql("TRUNCATE effects, executions")
        client = redis.Redis.from_url(self.redis_url)
        try:
            client.delete(RECONCILER_LOCK, KV_EXECUTIONS, KV_ENDED)
            for key in client.scan_iter("faults:kv:*", count=1000):
                client.delete(key)
        finally:
            client.close()
        broker = redis.Redis.from_url(self.broker_url)
        try:  # copies left queued by the test before (its runs ended): not this test's
            broker.delete("celery", *broker.scan_iter(match="celery\x06\x16*", count=100))
        finally:
            broker.close()
        return self

    def end(self, worker_timeout: float = 0.5) -> None:
        """Stop the test's workers (SIGTERM, then SIGKILL after ``worker_timeout``: the test's
        runs have ended, so they are idle) and give this process its environment back."""
        for worker in self.workers:
            worker.stopped = True
        stop_services([w.service for w in self.workers if w.service.proc], worker_timeout)
        self.retired += self.workers
        self.workers = []
        self.deactivate()

    def start_worker(
        self,
        prefix: str = "w",
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
    ) -> Worker:
        return super().start_worker(f"{self.tag}{prefix}", concurrency, env, args, wait)

    def close(self, keep: bool = False, worker_timeout: float = 20.0) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        super().close(keep, worker_timeout)

    # the test's own database access (survives PostgreSQL restarts)
    def sql(self, query: str, params: Any = None, retry_for: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(
                        self.database_url, autocommit=True, connect_timeout=3
                    )
                cursor = self._db.execute(query, params)
                return list(cursor.fetchall()) if cursor.description is not None else []
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    if self._db is not None:
                        self._db.close()
                self._db = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def executions(self) -> int:
        return int(self.sql("SELECT count(*) FROM executions")[0][0])

    def overlapping_executions(self, run_ids: list[str]) -> tuple[int, int]:
        """Pairs of executions of one (run, step) that overlapped in time: (same attempt, any).

        An execution lasts from ``at`` to ``ended_at`` (written when its body ends). With no
        ``ended_at``: a step that writes ``seen_at`` (the marker that it writes ``ended_at`` too)
        in a pool process that is still alive is still running (until now); otherwise (killed,
        or a step that writes neither) it lasted until ``seen_at`` (its last heartbeat) or else
        its start: an unknown end never counts as an overlap.
        """
        alive = [pid for w in list(self.workers) for pid in w.pool()]
        end = (
            "coalesce({t}.ended_at, CASE WHEN {t}.seen_at IS NOT NULL "
            "AND {t}.pid = ANY(%(alive)s::int[]) THEN clock_timestamp() END, {t}.seen_at, {t}.at)"
        )
        row = self.sql(
            "SELECT count(*) FILTER (WHERE a.attempt = b.attempt), count(*) "
            "FROM executions a JOIN executions b ON a.run_id = b.run_id "
            "AND a.step_id = b.step_id AND a.id < b.id AND a.exec_id <> b.exec_id "
            "WHERE a.run_id = ANY(%(runs)s::uuid[]) "
            f"AND a.at < {end.format(t='b')} AND b.at < {end.format(t='a')}",
            {"runs": run_ids, "alive": alive},
        )[0]
        return int(row[0]), int(row[1])

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        rows = self.sql(
            "SELECT id::text, status FROM workflow_runs WHERE id = ANY(%s::uuid[])", (run_ids,)
        )
        return {r[0]: r[1] for r in rows}

    def wait_terminal(
        self, run_ids: list[str], deadline: float
    ) -> tuple[dict[str, str], dict[str, float]]:
        """Poll until every run is terminal or ``deadline`` (``time.monotonic()``) passes.

        Returns the statuses, and for each run that turned terminal while polling (not already
        at the first poll) the wall-clock time of the poll that first saw it terminal.
        """
        seen: dict[str, float] = {}
        first = True
        while True:
            found = self.statuses(run_ids)
            now = time.time()
            if not first:
                for run in run_ids:
                    if found.get(run) in TERMINAL:
                        seen.setdefault(run, now)
            first = False
            if all(found.get(r) in TERMINAL for r in run_ids) or time.monotonic() > deadline:
                return found, seen
            time.sleep(0.25)

    def observe(
        self,
        test: str,
        run_ids: list[str],
        steps: dict[str, list[str]] | list[str],
        fault_at: float | None,
        started: float,
        timeout: float = 120.0,
        notes: dict[str, Any] | None = None,
    ) -> Outcome:
        """Wait for the runs, then measure them; ``steps`` lists each run's effect steps."""
        found, seen = self.wait_terminal(run_ids, time.monotonic() + timeout)
        expected = steps if isinstance(steps, dict) else {r: list(steps) for r in run_ids}
        succeeded = [r for r in run_ids if found.get(r) == "succeeded"]
        effects = self.sql(
            "SELECT run_id::text, step_id, count(*) FROM effects WHERE run_id = ANY(%s::uuid[]) "
            "GROUP BY 1, 2",
            (run_ids,),
        )
        written = {(r, s): n for r, s, n in effects}
        missing = {r for r in succeeded if any((r, s) not in written for s in expected[r])}
        stuck = sum(1 for r in run_ids if r in found and found[r] not in TERMINAL)
        execs = self.sql(
            "SELECT count(DISTINCT exec_id), count(DISTINCT (run_id, step_id)), "
            "count(DISTINCT exec_id) FILTER (WHERE inserted IS FALSE) "
            "FROM executions WHERE run_id = ANY(%s::uuid[])",
            (run_ids,),
        )[0]
        outcome = Outcome(
            test=test,
            submitted=len(run_ids),
            terminal=sum(1 for r in run_ids if found.get(r) in TERMINAL),
            succeeded=len(succeeded),
            failed=sum(1 for r in run_ids if found.get(r) == "failed"),
            cancelled=sum(1 for r in run_ids if found.get(r) == "cancelled"),
            lost=sum(1 for r in run_ids if r not in found) + len(missing),
            stuck=stuck,
            duplicated_effects=sum(n - 1 for n in written.values() if n > 1),
            re_executions=int(execs[0]) - int(execs[1]),
            absorbed=int(execs[2]),
            recovery_seconds=self._recovery(run_ids, seen, fault_at, stuck),
            elapsed_seconds=round(time.time() - started, 1),
            notes={**(notes or {}), **self._notes(run_ids)},
        )
        if missing or stuck:
            outcome.notes["examples"] = (
                sorted(missing)[:3] + [r for r in run_ids if found.get(r) not in TERMINAL][:3]
            )
        outcome.publish()
        return outcome

    def _recovery(
        self, run_ids: list[str], seen: dict[str, float], fault_at: float | None, stuck: int
    ) -> float | None:
        """From the fault to the last run becoming terminal (seconds)."""
        last = self.sql(
            "SELECT extract(epoch FROM max(finished_at)) FROM workflow_runs "
            "WHERE id = ANY(%s::uuid[])",
            (run_ids,),
        )[0][0]
        # a run's status turns terminal when its last history write lands, which can be after
        # its finished_at (the sink's report): take the poll that first saw it, when there was one
        if seen:
            last = max(float(last or 0), max(seen.values()))
        if fault_at is None or last is None or stuck:
            return None
        return round(max(0.0, float(last) - fault_at), 1)

    def _notes(self, run_ids: list[str]) -> dict[str, Any]:
        """Overlaps, workers that died, recoveries, duplicate deliveries: when there were any."""
        recovered = self.sql(
            "SELECT split_part(detail, ': ', 2), count(*) FROM run_events "
            "WHERE kind = 'recovered' AND run_id = ANY(%s::uuid[]) GROUP BY 1",
            (run_ids,),
        )
        # deliveries a worker dropped because the step was done or held by another delivery:
        # duplicates (redelivered or re-published messages) that the claims absorbed
        ignored = sum(w.output().count("] ignored") for w in list(self.workers))
        died = {w.name: why for w in list(self.workers) if (why := w.died())}
        same_attempt, overlapping = self.overlapping_executions(run_ids)
        notes: dict[str, Any] = {}
        if overlapping:
            notes["overlapping_executions"] = {"same_attempt": same_attempt, "any": overlapping}
        if died:
            notes["workers_died"] = died
        if recovered:
            notes["recoveries"] = {k: n for k, n in recovered}
        if ignored:
            notes["duplicate_deliveries_ignored"] = ignored
        return notes

    def diagnose(self, run_id: str) -> str:
        """The steps, events and dead letters of a run (for failure messages)."""
        steps = self.sql(
            "SELECT step_id, status, attempts, error FROM task_runs "
            "WHERE run_id = %s::uuid ORDER BY id",
            (run_id,),
            retry_for=5,
        )
        events = self.sql(
            "SELECT kind, detail FROM run_events WHERE run_id = %s::uuid ORDER BY id",
            (run_id,),
            retry_for=5,
        )
        return f"run {run_id}: steps {steps} events {events}"
