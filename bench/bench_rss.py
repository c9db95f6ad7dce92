"""A worker's memory over 100,000 steps: RSS of its main process and each pool child.

Run ``python bench/bench_rss.py [--steps 100000] [--every 5000]`` from the project root (a short
check: ``--steps 20000``). One worker, ``celery -A orchestrator.worker worker -c 2`` importing
``bench.tasks``, with a Redis and a PostgreSQL of the bench's own
(``bench_sustained.private_servers``; database ``orch_bench_rss``, dropped at the end), runs
waves of ``--every`` steps: runs of ``--run-steps`` (100) no-op steps, alternately a chain and a
fan-out/fan-in (``n - 1`` roots and a join), submitted at once, every run waited for. Before the
first wave (after one warm-up run of each shape) and after each wave the resident set size
(``/proc/PID/statm``) of the worker's main process and of each pool child is sampled.

Printed: the curve (steps done, seconds, MiB per process and in all), the growth of each process
and of the sum from the sample at 10,000 steps (the first one at or after it; the first sample
when the bench is shorter) to the last, and a verdict: flat when the sum grew by less than
``--flat-mib`` MiB (default 5) over that span; a pool child that was replaced (new pid) is named.
Figures are merged into ``bench/results.json`` under ``"rss"``; with ``--plot PATH`` and
matplotlib installed, the curve is also drawn to a PNG (nothing is installed for it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_canvas as bc  # noqa: E402
from bench import bench_sustained as bs  # noqa: E402
from bench import profiling  # noqa: E402

DB_NAME = "orch_bench_rss"
FROM_STEPS = 10_000


def snapshot(worker: bc.Worker, steps: int, started: float) -> dict[str, Any]:
    """RSS in MiB of the worker's main process (``main``) and of each pool child (by pid)."""
    main = worker.proc.pid
    rss = {"main": profiling.rss_mib(main) or 0.0}
    for child in profiling.children(main):
        rss[str(child)] = profiling.rss_mib(child) or 0.0
    return {"steps": steps, "seconds": time.monotonic() - started, "rss_mib": rss}


def wave(specs: list[Any], runs: int) -> None:
    """``runs`` runs, the shapes taking turns, submitted at once; until every one ended."""
    from orchestrator import run_workflow

    handles = [run_workflow(specs[i % len(specs)]) for i in range(runs)]
    for handle in handles:
        handle.wait(timeout=bc.WAIT_TIMEOUT)


def curve(args: argparse.Namespace, worker: bc.Worker) -> list[dict[str, Any]]:
    specs = [bc.wf_chain(args.run_steps), bc.wf_chord(args.run_steps - 1)]
    for spec in specs:  # warm-up
        wave([spec], 1)
    started = time.monotonic()
    samples = [snapshot(worker, 0, started)]
    done = 0
    runs_per_wave = max(1, args.every // args.run_steps)
    while done < args.steps:
        wave(specs, runs_per_wave)
        done += runs_per_wave * args.run_steps
        samples.append(snapshot(worker, done, started))
        total = sum(samples[-1]["rss_mib"].values())
        print(f"  {done:>7} steps, {samples[-1]['seconds']:6.0f} s: {total:7.1f} MiB", flush=True)
    return samples


def growth(samples: list[dict[str, Any]], flat_mib: float) -> dict[str, Any]:
    """Each process's and the sum's growth from the first sample at or after 10,000 steps (the
    first sample if none is) to the last."""
    first = next((s for s in samples[1:] if s["steps"] >= FROM_STEPS), samples[0])
    last = samples[-1]
    if first is last:
        first = samples[0]
    by_process = {
        name: last["rss_mib"][name] - first["rss_mib"][name]
        for name in last["rss_mib"]
        if name in first["rss_mib"]
    }
    replaced = sorted(set(first["rss_mib"]) ^ set(last["rss_mib"]))
    total = sum(last["rss_mib"].values()) - sum(first["rss_mib"].values())
    return {
        "from_steps": first["steps"],
        "to_steps": last["steps"],
        "mib_by_process": by_process,
        "mib_total": total,
        "replaced_processes": replaced,
        "flat": abs(total) < flat_mib and not replaced,
    }


def format_report(report: dict[str, Any]) -> str:
    meta, samples, grown = report["meta"], report["samples"], report["growth"]
    names = list(samples[0]["rss_mib"])
    for s in samples:
        names += [n for n in s["rss_mib"] if n not in names]
    labels = ["main" if n == "main" else f"child {n}" for n in names]
    head = f"{'steps':>8}{'s':>7}" + "".join(f"{lab:>14}" for lab in labels) + f"{'all':>9}"
    lines = [
        f"worker RSS (MiB) over {meta['steps']} steps: runs of {meta['run_steps']} steps "
        f"(chain and fan in turn), waves of {meta['every']} steps; prefork -c "
        f"{meta['concurrency']}; {meta['cpus']} CPUs",
        "",
        head,
        "-" * len(head),
    ]
    for s in samples:
        cells = "".join(
            f"{s['rss_mib'][n]:>14.1f}" if n in s["rss_mib"] else f"{'-':>14}" for n in names
        )
        lines.append(
            f"{s['steps']:>8}{s['seconds']:>7.0f}{cells}{sum(s['rss_mib'].values()):>9.1f}"
        )
    per = ", ".join(
        f"{'main' if n == 'main' else 'child ' + n} {v:+.1f}"
        for n, v in grown["mib_by_process"].items()
    )
    verdict = "flat" if grown["flat"] else "NOT flat"
    lines += [
        "",
        f"growth from {grown['from_steps']} to {grown['to_steps']} steps: {per}; all "
        f"{grown['mib_total']:+.1f} MiB -> {verdict} (flat: the sum moved less than "
        f"{meta['flat_mib']:g} MiB, no process replaced)",
    ]
    if grown["replaced_processes"]:
        lines.append(f"processes replaced meanwhile: {', '.join(grown['replaced_processes'])}")
    lines.append(bs.load_line(meta))
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> str:
    """Draw the curve to ``path`` if matplotlib is installed; what was done, in words."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return "no plot: matplotlib is not installed (the bench adds no dependency)"
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(figsize=(8, 4.5))
    samples = report["samples"]
    names = sorted({n for s in samples for n in s["rss_mib"]}, key=lambda n: (n != "main", n))
    for name in names:
        points = [(s["steps"], s["rss_mib"][name]) for s in samples if name in s["rss_mib"]]
        axes.plot(*zip(*points, strict=True), marker=".", label=name)
    axes.set_xlabel("steps done")
    axes.set_ylabel("RSS (MiB)")
    axes.set_ylim(bottom=0)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return f"plot written to {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="steps in all")
    parser.add_argument("--every", type=int, default=5000, help="steps per wave (a sample each)")
    parser.add_argument("--run-steps", type=int, default=100, help="steps per run")
    parser.add_argument("--concurrency", type=int, default=2, help="worker pool processes")
    parser.add_argument("--flat-mib", type=float, default=5.0, help="growth still called flat")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the curve (matplotlib)")
    parser.add_argument("--output", type=Path, default=bc.RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)
    meta = {
        "steps": args.steps,
        "every": args.every,
        "run_steps": args.run_steps,
        "concurrency": args.concurrency,
        "flat_mib": args.flat_mib,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    with (
        bs.private_servers("bench-rss") as servers,
        bs.fresh_database(servers, DB_NAME),
        tempfile.TemporaryDirectory(prefix="bench-rss-logs-") as logs,
        bc.running_worker(
            Path(logs) / "worker.log", argv=bc.orchestrator_worker_argv("-c", str(args.concurrency))
        ) as worker,
    ):
        samples = curve(args, worker)
    meta["load_after"] = os.getloadavg()[0]
    report = {"meta": meta, "samples": samples, "growth": growth(samples, args.flat_mib)}
    text = format_report(report)
    if args.plot is not None:
        text += "\n" + plot(report, args.plot)
    bs.publish(text, "rss", report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
