"""N runs sleeping at once: the worker's memory, Redis's, and how late they wake.

Run ``python bench/bench_sleeping.py [--runs N] [--sleep S]`` from the project root (PostgreSQL
on 127.0.0.1). It starts a Redis of its own (``orchestrator.testing``'s: AOF fsynced on every
write, the production setting) and makes a database of its own,
starts one worker (``-c 2``), submits N runs of a one-step workflow ``sleep("nap", S)``, and once
every ``nap`` is parked (running in history, holding no worker slot) reports:

* the worker's RSS (main process and pool, from /proc) and Redis's ``used_memory`` against
  their values before the runs, and what Redis holds (keys, and the delay store's sorted set);
* once every run ended: how late each sleep woke, from history (``finished_at - started_at - S``
  of each ``nap``), p50/p99/max, and how many ended early (must be 0).

S must exceed the time it takes to submit and park the N runs (the default leaves room for
10,000 on a small machine).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DB_NAME = "orchestrator_bench_sleeping"


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def _sql(query: str, params: Any = None) -> list[Any]:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/{DB_NAME}", autocommit=True) as conn:
        return list(conn.execute(query, params).fetchall())


@contextlib.contextmanager
def services() -> Iterator[dict[str, str]]:
    """A Redis db of our own and a fresh, migrated database; this process pointed at them."""
    from orchestrator.app import reset_default_app
    from orchestrator.settings import get_settings
    from orchestrator.stores.postgres.migrate import upgrade
    from orchestrator.testing.servers import RedisServer

    redis_server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-sleeping-redis-")))
    redis_server.start()  # a Redis of our own: no other process takes our delayed wake-ups
    redis_url = redis_server.url()
    env = {
        "ORCHESTRATOR_BROKER_URL": redis_url,
        "ORCHESTRATOR_RESULT_BACKEND": redis_url,
        "ORCHESTRATOR_REDIS_URL": redis_url,
        "ORCHESTRATOR_DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
        "ORCHESTRATOR_TASK_MODULES": "bench.tasks",
        "ORCHESTRATOR_WORKFLOWS_PATH": str(ROOT / "bench"),  # no YAML workflows here
    }
    os.environ.update(env)
    reset_default_app()
    get_settings.cache_clear()
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')
    upgrade(get_settings().sqlalchemy_url)
    try:
        yield env
    finally:
        reset_default_app()
        _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        redis_server.close()


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A orchestrator.worker worker -c 2`` in its own session, stopped afterwards."""
    from orchestrator.dev.server import worker_argv

    cmd = worker_argv(f"bench-sleep-{os.getpid()}", "-c", "2", loglevel="WARNING")
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def rss_mib(session: int) -> float:
    """Resident memory of every process of the session (worker main process and pool)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(stat[3]) != session:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def redis_figures() -> dict[str, float]:
    from orchestrator.app import default_services

    client = default_services().state.client  # type: ignore[attr-defined]
    return {
        "used_memory_mib": int(client.info("memory")["used_memory"]) / 2**20,
        "keys": int(client.dbsize()),
        "delayed_kib": int(client.memory_usage("orch:delayed") or 0) / 1024,
    }


def parked() -> int:
    return int(_sql("SELECT count(*) FROM task_runs WHERE status = 'running'")[0][0])


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(1.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=None, help="seconds (default: scaled)")
    args = parser.parse_args(argv)
    n, seconds = args.runs, args.sleep or max(60.0, args.runs * 0.06)
    logs = Path(tempfile.mkdtemp(prefix="bench-sleeping-"))
    with services() as env, worker(env, logs / "worker.log") as proc:
        from orchestrator import Workflow, run_workflow

        spec = Workflow(f"bench-sleep-{n}").sleep("nap", seconds).spec
        warm = Workflow("bench-sleep-warm-up").sleep("nap", 0.5).spec
        run_workflow(warm).wait(timeout=120)  # the worker and its pool run
        rss0, redis0 = rss_mib(proc.pid), redis_figures()
        began = time.monotonic()
        for _ in range(n):
            run_workflow(spec)
        submitted = time.monotonic() - began
        wait_until(lambda: parked() >= n, seconds, "every run parked")
        all_parked = time.monotonic() - began
        rss1, redis1 = rss_mib(proc.pid), redis_figures()
        wait_until(
            lambda: (
                _sql(
                    "SELECT count(*) FROM workflow_runs "
                    "WHERE status = 'succeeded' AND workflow = %s",
                    (spec.name,),
                )[0][0]
                >= n
            ),
            seconds + 600,
            "every run ended",
        )
        rows = _sql(
            "SELECT extract(epoch FROM t.finished_at - t.started_at) FROM task_runs t "
            "JOIN workflow_runs r ON r.id = t.run_id WHERE r.workflow = %s",
            (spec.name,),
        )
    late = [float(r[0]) - seconds for r in rows if r[0] is not None]
    print(
        f"{n} runs sleeping {seconds:.0f}s: submitted in {submitted:.1f}s, all parked after "
        f"{all_parked:.1f}s (worker -c 2; log {logs / 'worker.log'})"
    )
    print(f"worker RSS: {rss0:.0f} MiB idle, {rss1:.0f} MiB with {n} runs parked")
    print(
        f"Redis: used_memory {redis0['used_memory_mib']:.1f} -> {redis1['used_memory_mib']:.1f} "
        f"MiB; this db {redis0['keys']:.0f} -> {redis1['keys']:.0f} keys, delay "
        f"store {redis1['delayed_kib']:.0f} KiB"
    )
    print(
        f"wake lateness: p50 {statistics.median(late):.2f}s, p99 {percentile(late, 0.99):.2f}s, "
        f"max {max(late):.2f}s; ended early: {sum(1 for v in late if v < 0)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
