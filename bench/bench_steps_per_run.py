"""How a run's cost grows with its number of steps: runs of 10, 100 and 1000 steps.

Run ``python bench/bench_steps_per_run.py [--sizes 10,100,1000] [--repeats 3]`` from the project
root. Two shapes of each size ``n``: a chain of ``n`` steps and a fan-out/fan-in (``n - 1`` root
steps and one step after all of them), every step ``bench.tasks.noop``, on one worker
(``celery -A orchestrator.worker worker -c 2``), with a Redis and a PostgreSQL of the bench's own
(``bench_sustained.private_servers``: their CPU is this bench's alone; database
``orch_bench_steps``, dropped at the end).

A sample is as many runs of one shape and size, one after another, as make ``--batch-steps``
steps (1000: 100 runs of 10 steps, 10 of 100, 1 of 1000), so that the small runs' CPU is not
lost in /proc's 10 ms ticks. Each run is timed from ``run_workflow`` until ``wait()`` returns;
after each sample the bench waits until every step row of its runs is written (the history
writer batches them after the run's end), then reads:

- wall time per run (median over every run of every sample) and per step, and the per-step time
  over the 10-step run's (``x10``: 1.00 = a step costs the same in a 1000-step run);
- CPU per step of the worker (main and pool, /proc), of PostgreSQL (postmaster and backends) and
  of Redis, and this client's CPU per run (planning, writing the run's rows, publishing, waiting);
- PostgreSQL write transactions and WAL bytes per step (``pg_current_snapshot()``'s next xid and
  ``pg_current_wal_lsn()``, cluster-wide: the server is the bench's own).

Medians of ``--repeats`` samples; one warm-up run of each shape and size first. Figures are
printed as a table and merged into ``bench/results.json`` under ``"steps_per_run"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_canvas as bc  # noqa: E402
from bench import bench_sustained as bs  # noqa: E402

DB_NAME = "orch_bench_steps"
SHAPES: dict[str, Callable[[int], Any]] = {
    "chain": bc.wf_chain,
    "fan": lambda n: bc.wf_chord(n - 1),  # n - 1 roots and one join: n steps
}
SETTLE_TIMEOUT = 60.0


class Postgres:
    """Cluster-wide write counters of the bench's PostgreSQL."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def counters(self) -> dict[str, int]:
        """The next transaction id and the WAL position (bytes): neither waits for the
        statistics collector."""
        row = self.conn.execute(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"
        ).fetchone()
        assert row is not None
        return {"xacts": int(row[0]), "wal_bytes": int(row[1])}

    def unwritten(self, run_ids: list[str]) -> int:
        """Steps of these runs whose row does not say succeeded yet."""
        row = self.conn.execute(
            "SELECT count(*) FROM task_runs WHERE run_id = ANY(%s::uuid[])"
            " AND status <> 'succeeded'",
            (run_ids,),
        ).fetchone()
        return int(row[0]) if row else 0

    def settle(self, run_ids: list[str]) -> float:
        """Seconds until every step row of these runs is written."""
        started = time.monotonic()
        while self.unwritten(run_ids) and time.monotonic() - started < SETTLE_TIMEOUT:
            time.sleep(0.02)
        return time.monotonic() - started


@dataclass(frozen=True)
class Bench:
    """What a sample reads: the servers, the worker, the database's counters."""

    servers: bs.Servers
    worker: bc.Worker
    pg: Postgres

    def readings(self) -> dict[str, float]:
        return {
            **self.servers.cpu(),
            "worker": self.worker.cpu_seconds(),
            "client": time.process_time(),
            **self.pg.counters(),
        }


def sample(spec: Any, runs: int, bench: Bench) -> dict[str, Any]:
    """``runs`` runs of ``spec`` one after another: their wall times, the counters' growth."""
    from orchestrator import run_workflow

    before = bench.readings()
    walls, ids = [], []
    for _ in range(runs):
        started = time.perf_counter()
        handle = run_workflow(spec)
        handle.wait(timeout=bc.WAIT_TIMEOUT)
        walls.append(time.perf_counter() - started)
        ids.append(str(handle.id))
    settle = bench.pg.settle(ids)
    after = bench.readings()
    return {"walls": walls, "settle_s": settle, **{k: after[k] - before[k] for k in before}}


def measure(shape: str, size: int, args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    spec = SHAPES[shape](size)
    runs: int = max(1, args.batch_steps // size)
    sample(spec, 1, bench)  # warm-up
    samples = [sample(spec, runs, bench) for _ in range(args.repeats)]
    steps = runs * size

    def per_step(key: str, scale: float = 1000.0) -> float:
        return scale * float(statistics.median(s[key] for s in samples)) / steps

    wall = statistics.median(w for s in samples for w in s["walls"])
    figures = {
        "shape": shape,
        "steps": size,
        "runs_per_sample": runs,
        "wall_s": wall,
        "wall_ms_per_step": 1000 * wall / size,
        "worker_cpu_ms_per_step": per_step("worker"),
        "postgres_cpu_ms_per_step": per_step("postgres"),
        "redis_cpu_ms_per_step": per_step("redis"),
        "client_cpu_ms_per_run": 1000 * statistics.median(s["client"] for s in samples) / runs,
        "pg_xacts_per_step": per_step("xacts", 1.0),
        "pg_wal_bytes_per_step": per_step("wal_bytes", 1.0),
        "history_settle_s": statistics.median(s["settle_s"] for s in samples),
        "samples": samples,
    }
    print(
        f"  {shape} {size}: {wall:.3f} s per run, worker "
        f"{figures['worker_cpu_ms_per_step']:.2f} ms CPU per step",
        flush=True,
    )
    return figures


def format_report(report: dict[str, Any]) -> str:
    meta, rows = report["meta"], report["rows"]
    head = (
        f"{'shape':<7}{'steps':>6}{'wall s':>9}{'ms/step':>9}{'x10':>6}{'wrk ms':>8}"
        f"{'PG ms':>7}{'Redis ms':>9}{'cli ms/run':>11}{'PG tx':>7}{'WAL B':>8}"
    )
    lines = [
        f"cost by steps per run: median of {meta['repeats']} samples of {meta['batch_steps']} "
        f"steps; worker prefork -c {meta['concurrency']}; {meta['cpus']} CPUs",
        "",
        head,
        "-" * len(head),
    ]
    for r in rows:
        base = next(
            (b for b in rows if b["shape"] == r["shape"] and b["steps"] == min(meta["sizes"])),
            r,
        )
        ratio = r["wall_ms_per_step"] / base["wall_ms_per_step"]
        lines.append(
            f"{r['shape']:<7}{r['steps']:>6}{r['wall_s']:>9.3f}{r['wall_ms_per_step']:>9.2f}"
            f"{ratio:>6.2f}{r['worker_cpu_ms_per_step']:>8.2f}"
            f"{r['postgres_cpu_ms_per_step']:>7.2f}{r['redis_cpu_ms_per_step']:>9.2f}"
            f"{r['client_cpu_ms_per_run']:>11.1f}{r['pg_xacts_per_step']:>7.2f}"
            f"{r['pg_wal_bytes_per_step']:>8.0f}"
        )
    return "\n".join(
        [
            *lines,
            "",
            f"wall = one run, run_workflow to wait(); x10 = ms/step over the {min(meta['sizes'])}"
            "-step run's; wrk/PG/Redis ms = CPU per step (/proc); cli = client CPU per run; "
            "PG tx = write transactions per step; WAL B = WAL bytes per step",
            bs.load_line(meta),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=bs.parse_numbers,
        default=[10, 100, 1000],
        help="steps per run (10,100,1000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="samples per shape and size")
    parser.add_argument("--batch-steps", type=int, default=1000, help="steps per sample")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--output", type=Path, default=bc.RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes]
    report: dict[str, Any] = {
        "meta": {
            "sizes": sizes,
            "repeats": args.repeats,
            "batch_steps": args.batch_steps,
            "concurrency": args.concurrency,
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0],
        },
        "rows": [],
    }
    with (
        bs.private_servers("bench-steps") as servers,
        bs.fresh_database(servers, DB_NAME) as database_url,
        tempfile.TemporaryDirectory(prefix="bench-steps-logs-") as logs,
        bc.running_worker(
            Path(logs) / "worker.log", argv=bc.orchestrator_worker_argv("-c", str(args.concurrency))
        ) as worker,
    ):
        bench = Bench(servers, worker, Postgres(database_url))
        try:
            for shape in SHAPES:
                for size in sizes:
                    report["rows"].append(measure(shape, size, args, bench))
        finally:
            bench.pg.conn.close()
    report["meta"]["load_after"] = os.getloadavg()[0]
    bs.publish(format_report(report), "steps_per_run", report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
