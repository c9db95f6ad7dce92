"""The orchestrator against both Celery baselines, in one run on one machine (issue 14).

Run ``python bench/bench_baselines.py [--quick]`` from the project root (PostgreSQL and Redis on
127.0.0.1). Three sides, each on its own prefork ``-c 2`` worker, same machine, same run:

- ``plain``: raw Celery with its own defaults (``bench/plain_app.py``: no late acks, default
  prefetch, no task events, no ``task_track_started``), the Celery a user runs today;
- ``reliable``: raw Celery canvas on the orchestrator's app and worker, so with its reliability
  settings (late acks, prefetch 1, ``task_track_started``; task events off unless asked for):
  ``bench_canvas.py``'s comparison;
- ``orch``: the same shape as a workflow, with tracking (history in PostgreSQL) on.

Both workers run for the whole benchmark (the idle one blocks on its queue) with Redis db 11 as
broker, backend and run state, and a database of their own (``orchestrator_bench_baselines``);
both are removed at the end. Shapes: ``chord 1000->1`` (fan-out/fan-in), ``chain 100``,
``ladder 50`` (50 stages of ``a -> (b, c) -> d``), a 3-step chain from submit to result
(p50/p95), and the orchestrator's 3-step run timed in parts (``timeline``). Raw sides wait on
the final task id (``bench_canvas.run_raw``), the orchestrator on ``RunHandle.wait()``. Each
figure is the median of 3 runs (1 with ``--quick``) after one warm-up per side; the order of the
sides rotates every round. Worker CPU per step is the CPU of the
worker serving that side (all its processes, from /proc) over the number of tasks; client CPU is
this process's. Figures are printed as tables (ratios ``orch/plain`` and ``orch/reliable``, with
the load average) and merged into ``bench/results.json`` under ``"baselines"``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_canvas as bc  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/15"  # plain Celery; test sessions claim 13 down to 1
DB_NAME = "orchestrator_bench_baselines"
PLAIN_ENV = "BENCH_PLAIN_REDIS_URL"
SIDES = ("plain", "reliable", "orch")


def plain_app() -> Any:
    """``bench.plain_app``, imported once ``BENCH_PLAIN_REDIS_URL`` is set."""
    import importlib

    return importlib.import_module("bench.plain_app")


def plain_worker_argv(*args: str) -> list[str]:
    """``celery -A bench.plain_app worker`` (``-c 2`` unless told): Celery's defaults, except no
    mingle and no gossip, as the orchestrator's worker (gossip would make it consume the other
    worker's task events, which share the Redis db)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.plain_app",
        "worker",
        "--loglevel=WARNING",
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"plain-{os.getpid()}@%h",
        *(args or ("-c", "2")),
    ]


@dataclass(frozen=True)
class Shape:
    """One canvas shape: its task count, the raw canvas (given the task) and the workflow."""

    name: str
    tasks: int
    raw: Callable[[Any], Any]
    spec: Callable[[], Any]


def shapes() -> list[Shape]:
    return [
        Shape("chord 1000->1", 1001, lambda t: bc.raw_chord(1000, t), lambda: bc.wf_chord(1000)),
        Shape("chain 100", 100, lambda t: bc.raw_chain(100, t), lambda: bc.wf_chain(100)),
        Shape("ladder 50 stages", 200, lambda t: bc.raw_ladder(50, t), lambda: bc.wf_ladder(50)),
    ]


def runners(shape: Shape, spec: Any) -> dict[str, Callable[[], float]]:
    """Each side's run of ``shape``: seconds from build to the final result in the client."""
    plain, reliable = plain_app().noop, bc.tasks_module().noop
    return {
        "plain": lambda: bc.run_raw(lambda: shape.raw(plain)),
        "reliable": lambda: bc.run_raw(lambda: shape.raw(reliable)),
        "orch": lambda: bc.run_orch(spec),
    }


def rotated(round_no: int) -> tuple[str, ...]:
    """The sides in round ``round_no``'s order: each side goes first once in three rounds."""
    k = round_no % len(SIDES)
    return SIDES[k:] + SIDES[:k]


def measure(shape: Shape, repeats: int, workers: dict[str, bc.Worker]) -> dict[str, Any]:
    """One warm-up per side, then ``repeats`` rounds of every side; medians per step."""
    run = runners(shape, shape.spec())
    for side in SIDES:
        run[side]()
    samples: dict[str, list[bc.Sample]] = {side: [] for side in SIDES}
    for round_no in range(repeats):
        for side in rotated(round_no):
            samples[side].append(bc.sampled(workers[side], run[side]))
    figures: dict[str, Any] = {"tasks": shape.tasks}
    for side, runs in samples.items():
        figures[side] = {
            "wall_s": statistics.median(s.wall for s in runs),
            "worker_cpu_ms_per_step": 1000
            * statistics.median(s.worker_cpu for s in runs)
            / shape.tasks,
            "client_cpu_ms_per_step": 1000
            * statistics.median(s.client_cpu for s in runs)
            / shape.tasks,
            "runs": [asdict(s) for s in runs],
        }
    walls = ", ".join(f"{side} {figures[side]['wall_s']:.3f}s" for side in SIDES)
    print(f"  {shape.name}: {walls}", flush=True)
    return figures


def latency_once(side: str, spec: Any) -> float:
    started = time.perf_counter()
    if side == "orch":
        from orchestrator import run_workflow

        run_workflow(spec).wait(timeout=bc.WAIT_TIMEOUT)
    else:
        noop = plain_app().noop if side == "plain" else bc.tasks_module().noop
        bc.raw_chain(3, noop).apply_async().get(timeout=bc.WAIT_TIMEOUT, interval=0.005)
    return time.perf_counter() - started


def measure_latency(runs: int) -> dict[str, Any]:
    """A 3-step chain, submit to result, ``runs`` samples per side in rotating order."""
    spec = bc.wf_chain(3)
    for _ in range(3):  # warm-up
        for side in SIDES:
            latency_once(side, spec)
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_no in range(runs):
        for side in rotated(round_no):
            samples[side].append(latency_once(side, spec))
    figures = {side: bc.percentiles(s) for side, s in samples.items()}
    p50s = ", ".join(f"{side} {figures[side]['p50_ms']:.1f} ms" for side in SIDES)
    print(f"  latency p50: {p50s}", flush=True)
    return figures


def timeline(runs: int = 20) -> dict[str, float]:
    """Where a 3-step run's submit-to-result time goes (no profiler; medians, ms): ``submit``
    (``run_workflow`` until it returns), ``to_first_step`` (its return until the run's
    ``started_at``), ``steps`` (``started_at`` to ``finished_at``, stamped by the worker when it
    knows the end), ``end_to_client`` (``finished_at`` until ``wait()`` returns: history write,
    announcement, the client's reads)."""
    from orchestrator import run_workflow

    spec = bc.wf_chain(3)
    parts: dict[str, list[float]] = {
        k: [] for k in ("total", "submit", "to_first_step", "steps", "end_to_client")
    }
    for _ in range(runs + 3):  # the first 3 are a warm-up
        t0 = time.time()
        handle = run_workflow(spec)
        t1 = time.time()
        handle.wait(timeout=bc.WAIT_TIMEOUT)
        t2 = time.time()
        record = handle.record()
        assert record.started_at is not None and record.finished_at is not None
        started, finished = record.started_at.timestamp(), record.finished_at.timestamp()
        for name, value in (
            ("total", t2 - t0),
            ("submit", t1 - t0),
            ("to_first_step", started - t1),
            ("steps", finished - started),
            ("end_to_client", t2 - finished),
        ):
            parts[name].append(1000 * value)
    return {k: statistics.median(v[3:]) for k, v in parts.items()}


# -- the report -----------------------------------------------------------------------------


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average (1, 5 min): {one:.2f}, {five:.2f}"


def wall_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    head = (
        f"{'wall time, median':<20}{'tasks':>6}{'plain s':>9}{'reliab s':>9}{'orch s':>9}"
        f"{'o/plain':>9}{'o/reliab':>9}{'+ms/step':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, f in rows.items():
        plain, reliable, orch = (f[side]["wall_s"] for side in SIDES)
        lines.append(
            f"{name:<20}{f['tasks']:>6}{plain:>9.3f}{reliable:>9.3f}{orch:>9.3f}"
            f"{orch / plain:>9.2f}{orch / reliable:>9.2f}"
            f"{1000 * (orch - plain) / f['tasks']:>9.2f}"
        )
    return lines


def cpu_table(rows: dict[str, dict[str, Any]], field: str, title: str) -> list[str]:
    head = f"{title:<26}{'plain':>8}{'reliab':>8}{'orch':>8}{'o/plain':>9}{'o/reliab':>9}"
    lines = [head, "-" * len(head)]
    for name, f in rows.items():
        plain, reliable, orch = (f[side][field] for side in SIDES)
        lines.append(
            f"{name:<26}{plain:>8.2f}{reliable:>8.2f}{orch:>8.2f}"
            f"{orch / plain:>9.2f}{orch / reliable:>9.2f}"
        )
    return lines


def latency_table(lat: dict[str, Any]) -> list[str]:
    head = (
        f"{'3-step chain, ms':<20}{'plain':>9}{'reliab':>9}{'orch':>9}{'o/plain':>9}{'o/reliab':>9}"
    )
    lines = [head, "-" * len(head)]
    for label, k in (("p50", "p50_ms"), ("p95", "p95_ms")):
        plain, reliable, orch = (lat[side][k] for side in SIDES)
        lines.append(
            f"{label:<20}{plain:>9.1f}{reliable:>9.1f}{orch:>9.1f}"
            f"{orch / plain:>9.2f}{orch / reliable:>9.2f}"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    meta, rows = report["meta"], report["shapes"]
    return "\n".join(
        [
            f"orchestrator vs raw Celery {meta['celery']}: plain = Celery defaults, reliab = "
            f"orchestrator's Celery settings; prefork -c 2 each, Redis; median of "
            f"{meta['repeats']}, {meta['cpus']} CPUs",
            "",
            *wall_table(rows),
            meta["load_shapes"],
            "",
            *cpu_table(rows, "worker_cpu_ms_per_step", "worker CPU ms per step"),
            "",
            *cpu_table(rows, "client_cpu_ms_per_step", "client CPU ms per step"),
            meta["load_shapes"],
            "",
            *latency_table(report["latency"]),
            "orch 3-step run in parts, medians (ms): "
            + ", ".join(f"{k} {v:.1f}" for k, v in report["timeline"].items()),
            meta["load_latency"],
        ]
    )


def run_benchmarks(quick: bool, logs: Path) -> dict[str, Any]:
    import celery

    repeats = 1 if quick else 3
    report: dict[str, Any] = {
        "meta": {
            "quick": quick,
            "repeats": repeats,
            "celery": celery.__version__,
            "cpus": os.cpu_count(),
            "load_before": load_average(),
        }
    }
    with (
        bc.running_worker(logs / "orch.log") as orch_worker,
        bc.running_worker(
            logs / "plain.log", argv=plain_worker_argv(), probe=plain_app().noop
        ) as plain_worker,
    ):
        workers = {"plain": plain_worker, "reliable": orch_worker, "orch": orch_worker}
        print("shapes:", flush=True)
        report["shapes"] = {s.name: measure(s, repeats, workers) for s in shapes()}
        report["meta"]["load_shapes"] = load_average()
        report["latency"] = measure_latency(10 if quick else 50)
        report["timeline"] = timeline()
        report["meta"]["load_latency"] = load_average()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per figure, not 3")
    parser.add_argument("--output", type=Path, default=bc.RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)
    os.environ[PLAIN_ENV] = REDIS_URL
    bc.setup_services(REDIS_URL, DB_NAME)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-baselines-") as logs:
            report = run_benchmarks(args.quick, Path(logs))
    finally:
        bc.teardown_services(REDIS_URL, DB_NAME)
    print()
    print(format_report(report))
    bc.save(args.output, {"baselines": report})
    print(f"\nfigures written to {args.output} (key 'baselines')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
