"""Sustained load: runs offered at a fixed rate for a minute, the orchestrator beside raw Celery.

Run ``python bench/bench_sustained.py [--rates 50,100,200] [--seconds 60] [--steps 1|3]`` from
the project root; a short check: ``--rates 20 --seconds 10``. Like Hatchet's published load test:
for each rate, runs are offered at that rate (run ``i`` is due ``i / rate`` seconds after the
start) for ``--seconds`` from this one process (``--submitters`` threads submit, ``--waiters``
threads wait, each on the oldest run not yet waited on), against a real worker,
``celery -A orchestrator.worker worker -c 2`` importing ``bench.tasks``; then the same rate is
offered to raw Celery with its own defaults (``bench/plain_app.py``, its worker ``-c 2``): a
``--steps``-task chain of ``bench.plain.noop``, waited on with ``AsyncResult.get()``. A run of
the orchestrator is a ``--steps``-step chain workflow of ``bench.tasks.noop`` (one step unless
told), waited on with ``RunHandle.wait()``.

The servers are the test servers of ``orchestrator.testing.servers``, started for this bench and
removed at the end (a ``redis-server`` with its AOF fsynced on every write, as production needs,
and a PostgreSQL 16 with its defaults), so that their CPU is this bench's alone: every phase (one
side at one rate) gets a fresh database (``orch_bench_sustained``), an emptied Redis db 11 and a
fresh worker, so a backlog left by a saturated phase cannot leak into the next one.

Printed per side and rate (and merged into ``bench/results.json`` under ``"sustained"``):

- ``offered`` (rate x seconds), ``submitted`` (a slot whose time came after the window closed, the
  client being behind, is not submitted), ``done`` (ended within the window), ``runs/s`` (done
  in the window / seconds), ``backlog`` (submitted, not ended when the window closed);
- submit-to-result latency p50/p95/p99 (from the call that submits until ``wait()``/``get()``
  returns), over every submitted run: a run still not done ``--drain`` seconds after the window
  shows as ``>drain`` when the percentile falls on it; ``late`` is the p95 of how far behind its
  slot the client submitted (a client that cannot keep up shows here, not in the latency);
- CPU seconds over the window, from /proc: PostgreSQL (the postmaster and every backend, also
  those that exited), Redis, the worker (main process and pool), this client;
- the orchestrator's runs as history tells them, apart from the client's waiting: ``ended/s``
  (runs whose ``finished_at``, stamped by the worker when it knows the run's end in Redis, falls
  in the window), submit-to-``finished_at`` p50/p95/p99, and the history lag: how long after
  ``finished_at`` the run's row in PostgreSQL says ``succeeded``, p50/p95. Found by polling
  ``workflow_runs`` every 50 ms (so up to 50 ms late); the polling backend's CPU is left out of
  PostgreSQL's.

On a 2-core machine the client, the worker and both servers share two CPUs: past some rate the
worker cannot keep up, ``runs/s`` stays below the rate offered and the backlog and latency grow
with the window. That is reported as measured, with the load average (other work on the machine
shares the CPUs too).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_baselines as bb  # noqa: E402
from bench import bench_canvas as bc  # noqa: E402
from bench import profiling  # noqa: E402

DB_NAME = "orch_bench_sustained"
REDIS_DB = 11
SIDES = ("orch", "celery")
POLL_SECONDS = 0.05
WARM_UP_RUNS = 20


# -- servers of the bench's own -------------------------------------------------------------


@dataclass
class Servers:
    """A Redis and a PostgreSQL of the bench's own (``orchestrator.testing.servers``)."""

    root: Path
    redis: Any  # RedisServer
    postgres: Any  # PostgresServer

    @property
    def redis_url(self) -> str:
        return str(self.redis.url(REDIS_DB))

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of PostgreSQL (postmaster and backends) and of Redis."""
        return {
            "postgres": profiling.tree_cpu_seconds(self.postgres.pid),
            "redis": profiling.tree_cpu_seconds(self.redis.pid),
        }

    def admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)


@contextlib.contextmanager
def private_servers(prefix: str) -> Iterator[Servers]:
    """Start a Redis and a PostgreSQL on free ports; stop them and remove their data after."""
    from orchestrator.app import reset_default_app
    from orchestrator.testing.servers import PostgresServer, RedisServer

    root = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    servers = Servers(
        root, RedisServer(root / "redis"), PostgresServer(root / "postgres", max_connections=300)
    )
    try:
        servers.redis.start()
        servers.postgres.start()
        os.environ[bb.PLAIN_ENV] = servers.redis_url  # before bench.plain_app is imported
        yield servers
    finally:
        reset_default_app()  # close this process's connections before the servers go
        if servers.postgres.running:
            servers.postgres.stop("fast")
        if servers.redis.running:
            servers.redis.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(servers: Servers, db_name: str) -> Iterator[str]:
    """A new database ``db_name`` (migrated) and an emptied Redis db, this process and the
    workers it starts pointed at them; both dropped and emptied after. Yields the database URL."""
    import redis

    from orchestrator.app import reset_default_app
    from orchestrator.settings import get_settings
    from orchestrator.stores.postgres.migrate import upgrade

    url = servers.postgres.url(db_name)
    os.environ.update(
        {**bc.bench_env(servers.redis_url, db_name), "ORCHESTRATOR_DATABASE_URL": url}
    )
    drop = f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'
    reset_default_app()
    get_settings.cache_clear()
    servers.admin(drop, f'CREATE DATABASE "{db_name}"')
    redis.Redis.from_url(servers.redis_url).flushdb()
    upgrade(get_settings().sqlalchemy_url)
    try:
        yield str(url)
    finally:
        reset_default_app()
        servers.admin(drop)
        redis.Redis.from_url(servers.redis_url).flushdb()


# -- offering runs at a fixed rate ----------------------------------------------------------


@dataclass
class Run:
    """One offered run: its slot, when its submit call started and returned, when waiting on
    it returned (None: not within the drain), and whether it succeeded."""

    due: float
    started: float = math.nan
    submitted: float = math.nan
    handle: Any = None
    ended: float | None = None
    ok: bool = False


@dataclass
class Side:
    """How one side submits a run and waits for it (``wait(handle, timeout)``)."""

    name: str
    submit: Callable[[], Any]
    wait: Callable[[Any, float], None]
    run_id: Callable[[Any], str | None] = lambda _handle: None


def orch_side(steps: int) -> Side:
    from orchestrator import run_workflow

    spec = bc.wf_chain(steps)

    def wait(handle: Any, timeout: float) -> None:
        handle.wait(timeout=timeout)

    return Side("orch", lambda: run_workflow(spec), wait, lambda handle: str(handle.id))


def celery_side(steps: int) -> Side:
    noop = bb.plain_app().noop

    def wait(result: Any, timeout: float) -> None:
        # an AsyncResult of this thread's own (Celery's result consumer is per thread)
        result.app.AsyncResult(result.id).get(timeout=timeout, interval=0.005)

    return Side("celery", lambda: bc.raw_chain(steps, noop).apply_async(), wait)


@dataclass
class HistoryWatch:
    """Polls ``workflow_runs`` for the runs given to it; notes when each row first says
    ``succeeded`` (this clock) and its ``finished_at`` (the worker's stamp of the run's end).

    One query every 50 ms: the succeeded rows created since the oldest run not seen yet (the
    ``(status, created_at)`` index), so its cost follows the rate, not the backlog; its backend's
    CPU (``backend_pid``) is read apart from the rest of PostgreSQL's."""

    database_url: str
    pending: dict[str, float] = field(default_factory=dict)  # id -> wall time before submit
    seen: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """id -> (wall time before submit, finished_at, when its row was seen succeeded)"""
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    backend_pid: int = 0

    def add(self, run_id: str | None, since: float) -> None:
        if run_id is not None:
            with self.lock:
                self.pending[run_id] = since

    def poll(self) -> None:
        import psycopg

        query = (
            "SELECT id::text, finished_at FROM workflow_runs "
            "WHERE status = 'succeeded' AND created_at >= to_timestamp(%s)"
        )
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            self.backend_pid = conn.info.backend_pid
            self.ready.set()
            while not self.stop.is_set():
                with self.lock:
                    oldest = min(self.pending.values(), default=None)
                if oldest is not None:
                    rows = conn.execute(query, (oldest - 0.05,)).fetchall()
                    now = time.time()
                    with self.lock:
                        for run_id, finished in rows:
                            if (since := self.pending.pop(run_id, None)) is not None:
                                self.seen[run_id] = (since, finished.timestamp(), now)
                time.sleep(POLL_SECONDS)

    def figures(self, close: float) -> dict[str, Any]:
        """History lag, and the runs' ends as the worker stamped them (``close``: the window's
        end, wall clock): how many ended in the window, submit-to-end latency over every run
        given (``inf``: not succeeded in history by the end)."""
        lags = [seen - finished for _, finished, seen in self.seen.values()]
        ends = [finished - since for since, finished, _ in self.seen.values()]
        ends += [math.inf] * len(self.pending)
        return {
            "ended_in_window": sum(1 for _, f, _ in self.seen.values() if f <= close),
            **{f"end_p{q}_ms": 1000 * percentile(ends, q) for q in (50, 95, 99)},
            **{f"lag_p{q}_ms": 1000 * percentile(lags, q) for q in (50, 95)},
            "missing": len(self.pending),
        }


class Offer:
    """Runs offered at ``rate`` per second for ``seconds``: ``submitters`` threads submit each
    run when its slot comes (``on_submit`` is told each handle and the wall time before its
    submit), ``waiters`` threads wait on the runs in the order submitted, until ``drain``
    seconds after the window closed."""

    def __init__(
        self,
        side: Side,
        rate: float,
        seconds: float,
        threads: tuple[int, int],
        drain: float,
        on_submit: Callable[[Any, float], None],
    ) -> None:
        self.side, self.on_submit = side, on_submit
        self.start = time.monotonic() + 0.2  # the window: [start, close]
        self.close = self.start + seconds
        self.deadline = self.close + drain
        self.runs = [Run(self.start + i / rate) for i in range(int(rate * seconds))]
        self.slots = itertools.count()
        self.handed: queue.Queue[Run | None] = queue.Queue()
        submitters, waiters = threads
        self.submitting = [threading.Thread(target=self.submit_loop) for _ in range(submitters)]
        self.waiting = [threading.Thread(target=self.wait_loop) for _ in range(waiters)]
        for thread in self.submitting + self.waiting:
            thread.daemon = True
            thread.start()

    def submit_loop(self) -> None:
        while (i := next(self.slots)) < len(self.runs):
            run = self.runs[i]
            if (pause := run.due - time.monotonic()) > 0:
                time.sleep(pause)
            run.started, since = time.monotonic(), time.time()
            if run.started > self.close:
                continue  # the client is behind: this slot was not submitted in the window
            try:
                run.handle = self.side.submit()
            except Exception as exc:  # noqa: BLE001 - counted, and the offer goes on
                print(f"  submit failed: {type(exc).__name__}: {exc}", flush=True)
                continue
            run.submitted = time.monotonic()
            self.handed.put(run)
            self.on_submit(run.handle, since)

    def wait_loop(self) -> None:
        while (run := self.handed.get()) is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                continue
            try:
                self.side.wait(run.handle, left)
            except Exception:  # noqa: BLE001 - a failed or timed-out run is counted as such
                continue
            run.ok, run.ended = True, time.monotonic()

    def finish(self) -> None:
        """Until every slot was submitted and every submitted run ended (or the drain ran out)."""
        for thread in self.submitting:
            thread.join()
        for _ in self.waiting:
            self.handed.put(None)
        for thread in self.waiting:
            thread.join()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``inf`` stands for a run that never ended)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def phase(
    servers: Servers, side_name: str, rate: float, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    """One side at one rate, on a fresh database, Redis db and worker."""
    with fresh_database(servers, DB_NAME) as database_url:
        if side_name == "orch":
            side = orch_side(args.steps)
            argv = bc.orchestrator_worker_argv("-c", str(args.concurrency))
            probe = None
        else:
            side = celery_side(args.steps)
            argv = bb.plain_worker_argv("-c", str(args.concurrency))
            probe = bb.plain_app().noop
        log = logs / f"{side_name}-{rate:g}.log"
        with bc.running_worker(log, argv=argv, probe=probe) as worker:
            for _ in range(WARM_UP_RUNS):
                side.wait(side.submit(), bc.WAIT_TIMEOUT)
            return measure_phase(side, rate, args, worker, servers, database_url)


def measure_phase(
    side: Side,
    rate: float,
    args: argparse.Namespace,
    worker: bc.Worker,
    servers: Servers,
    database_url: str,
) -> dict[str, Any]:
    watch = HistoryWatch(database_url.replace("postgresql+psycopg", "postgresql"))
    poller = threading.Thread(target=watch.poll, daemon=True)
    if side.name == "orch":
        poller.start()
        watch.ready.wait(30)
    offered = Offer(
        side,
        rate,
        args.seconds,
        (args.submitters, args.waiters),
        args.drain,
        lambda handle, since: watch.add(side.run_id(handle), since),
    )
    runs, close = offered.runs, offered.close
    while time.monotonic() < offered.start:
        time.sleep(0.001)
    close_wall = time.time() + args.seconds

    def cpu() -> dict[str, float]:
        poller_cpu = profiling.tree_cpu_seconds(watch.backend_pid) if watch.backend_pid else 0.0
        return {
            **servers.cpu(),
            "worker": worker.cpu_seconds(),
            "client": time.process_time(),
            "poller_postgres": poller_cpu,
        }

    before = cpu()
    while (left := close - time.monotonic()) > 0:
        time.sleep(left)
    after = cpu()
    load = os.getloadavg()[0]
    submitted = [r for r in runs if r.handle is not None]
    done_in_window = sum(1 for r in submitted if r.ended is not None and r.ended <= close)
    offered.finish()
    deadline = time.monotonic() + 5.0  # the history of runs that ended at the drain's end
    while side.name == "orch" and watch.pending and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    watch.stop.set()
    if poller.is_alive():
        poller.join()
    latencies = [(r.ended - r.started) if r.ended is not None else math.inf for r in submitted]
    used = {k: after[k] - before[k] for k in before}
    used["postgres"] -= used["poller_postgres"]  # the bench's polling is not the system's cost
    figures = {
        "side": side.name,
        "rate": rate,
        "seconds": args.seconds,
        "steps": args.steps,
        "offered": len(runs),
        "submitted": len(submitted),
        "done_in_window": done_in_window,
        "done": sum(1 for r in submitted if r.ended is not None),
        "failed_or_timed_out": sum(1 for r in submitted if not r.ok),
        "runs_per_s": done_in_window / args.seconds,
        "backlog": len(submitted) - done_in_window,
        **{f"p{q}_ms": 1000 * percentile(latencies, q) for q in (50, 95, 99)},
        "submit_late_p95_ms": 1000 * percentile([r.started - r.due for r in submitted], 95),
        "cpu_s": used,
        "history": watch.figures(close_wall) if side.name == "orch" else None,
        "load_average": round(load, 2),
    }
    print(
        f"  {side.name} {rate:g}/s: {figures['runs_per_s']:.1f} runs/s, backlog "
        f"{figures['backlog']}, p50 {ms(figures['p50_ms'])} ms, load {load:.2f}",
        flush=True,
    )
    return figures


# -- the report -----------------------------------------------------------------------------


def ms(value: float | None, drain: float | None = None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return f">{drain:g}s" if drain is not None else "inf"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _table(head: str, rows: list[str]) -> list[str]:
    return ["", head, "-" * len(head), *rows]


def client_table(rows: list[dict[str, Any]], drain: float) -> list[str]:
    head = (
        f"{'side':<8}{'rate/s':>7}{'offered':>9}{'submit':>8}{'done':>8}{'runs/s':>8}"
        f"{'backlog':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'late ms':>9}"
    )
    return _table(
        head,
        [
            f"{r['side']:<8}{r['rate']:>7g}{r['offered']:>9}{r['submitted']:>8}"
            f"{r['done_in_window']:>8}{r['runs_per_s']:>8.1f}{r['backlog']:>8}"
            f"{ms(r['p50_ms'], drain):>9}{ms(r['p95_ms'], drain):>9}"
            f"{ms(r['p99_ms'], drain):>9}{ms(r['submit_late_p95_ms']):>9}"
            for r in rows
        ],
    )


def history_table(rows: list[dict[str, Any]], seconds: float) -> list[str]:
    head = (
        f"{'side':<8}{'rate/s':>7}{'ended/s':>9}{'end p50':>9}{'end p95':>9}{'end p99':>9}"
        f"{'lag p50':>9}{'lag p95':>9}"
    )
    lines = []
    for r in rows:
        if (h := r["history"]) is not None:
            lines.append(
                f"{r['side']:<8}{r['rate']:>7g}{h['ended_in_window'] / seconds:>9.1f}"
                f"{ms(h['end_p50_ms']):>9}{ms(h['end_p95_ms']):>9}"
                f"{ms(h['end_p99_ms']):>9}{ms(h['lag_p50_ms']):>9}{ms(h['lag_p95_ms']):>9}"
            )
    return _table(head, lines) if lines else []


def cpu_table(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        f"{'side':<8}{'rate/s':>7}{'PG cpu s':>10}{'Redis s':>9}{'worker s':>10}"
        f"{'client s':>10}{'wrk ms/run':>11}{'PG ms/run':>10}{'load':>7}"
    )
    lines = []
    for r in rows:
        cpu, history = r["cpu_s"], r["history"]
        done = max(history["ended_in_window"] if history else r["done_in_window"], 1)
        lines.append(
            f"{r['side']:<8}{r['rate']:>7g}{cpu['postgres']:>10.2f}{cpu['redis']:>9.2f}"
            f"{cpu['worker']:>10.2f}{cpu['client']:>10.2f}{1000 * cpu['worker'] / done:>11.2f}"
            f"{1000 * cpu['postgres'] / done:>10.2f}{r['load_average']:>7.2f}"
        )
    return _table(head, lines)


def format_report(report: dict[str, Any]) -> str:
    meta, rows = report["meta"], report["phases"]
    drain, seconds = meta["drain_s"], meta["seconds"]
    notes = [
        f"done = ended (wait()/get() returned) within the window; backlog = submitted, not "
        f"ended when it closed; latency = submit to result over every submitted run "
        f"('>{drain:g}s': not ended {drain:g} s after the window); late = p95 of how far "
        "behind its slot the client submitted",
        "ended/s, end = the same from history: runs whose finished_at (the worker's stamp) falls "
        "in the window, submit to finished_at (inf: not in history by the end); lag = "
        "finished_at to the row saying succeeded (polled every 50 ms)",
        "CPU seconds over the window (/proc; the bench's polling backend left out); per run: "
        "over the runs ended in the window (orch: by finished_at)",
        *(
            f"{r['side']} {r['rate']:g}/s: {r['failed_or_timed_out']} runs failed or not "
            "ended by the drain's end"
            for r in rows
            if r["failed_or_timed_out"]
        ),
        load_line(meta),
    ]
    return "\n".join(
        [
            f"sustained load: {meta['steps']}-step runs offered for {seconds:g} s; worker "
            f"prefork -c {meta['concurrency']}; {meta['cpus']} CPUs; Celery {meta['celery']}; "
            "orch = orchestrator, celery = raw Celery with its defaults",
            *client_table(rows, drain),
            *history_table(rows, seconds),
            *cpu_table(rows),
            "",
            *notes,
        ]
    )


def load_line(meta: dict[str, Any]) -> str:
    """The 1-minute load average before and after a bench (others' work shares the CPUs)."""
    return (
        f"load average (1 min) before: {meta['load_before']:.2f}, after: {meta['load_after']:.2f}"
    )


def publish(text: str, key: str, report: dict[str, Any], output: Path) -> None:
    """Print the tables; merge ``report`` into the JSON file ``output`` under ``key``."""
    print()
    print(text)
    bc.save(output, {key: report})
    print(f"\nfigures written to {output} (key {key!r})")


def parse_numbers(text: str) -> list[float]:
    """``"50,100,200"`` -> ``[50.0, 100.0, 200.0]``."""
    return [float(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates",
        type=parse_numbers,
        default=[50.0, 100.0, 200.0],
        help="runs/s offered, comma-separated (default 50,100,200)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="window per rate")
    parser.add_argument("--steps", type=int, default=1, help="steps per run (1; or 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument(
        "--drain", type=float, default=60.0, help="seconds to wait for the backlog after the window"
    )
    parser.add_argument("--submitters", type=int, default=4, help="submitting threads")
    parser.add_argument("--waiters", type=int, default=64, help="waiting threads")
    parser.add_argument("--sides", default=",".join(SIDES), help="orch,celery (default both)")
    parser.add_argument("--output", type=Path, default=bc.RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)
    import celery

    sides = [s for s in args.sides.split(",") if s in SIDES]
    report: dict[str, Any] = {
        "meta": {
            "seconds": args.seconds,
            "steps": args.steps,
            "concurrency": args.concurrency,
            "drain_s": args.drain,
            "threads": [args.submitters, args.waiters],
            "cpus": os.cpu_count(),
            "celery": celery.__version__,
            "load_before": os.getloadavg()[0],
        },
        "phases": [],
    }
    with (
        private_servers("bench-sustained") as servers,
        tempfile.TemporaryDirectory(prefix="bench-sustained-logs-") as logs,
    ):
        for rate in args.rates:
            for side in sides:
                report["phases"].append(phase(servers, side, rate, args, Path(logs)))
    report["meta"]["load_after"] = os.getloadavg()[0]
    publish(format_report(report), "sustained", report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
