"""Planning time: CPU milliseconds of ``build_plan`` for wide, long, nested and non-series-parallel
DAGs. No servers are needed.

Run ``python bench/bench_planning.py [--repeat N] [--only TEXT]`` from the project root. Every
``run_workflow`` plans its DAG before the first message is published, and every worker plans it
again (once per process, cached), so planning time is wall time on the submit path.

Shapes (the same workflows as ``bench/bench_canvas.py`` where it has them):

- fan-in N: N root steps and one step after all of them (a chord N → 1), N = 250 .. 10,000;
- chain N: N steps one after another;
- ladder N: N stages of ``a -> (b, c) -> d``, each ``a`` after the ``d`` before it (4 N steps);
- random 1000: 1000 steps, each after up to 3 earlier ones at random (seeded); it is not
  series-parallel, so the decomposition finds joins (``segments`` is high).

Each spec is built once (not timed), then ``build_plan`` runs ``--repeat`` times, timed with
``time.process_time`` (CPU of this process, steadier than wall time on a shared machine). The
table shows the fastest and the median run and the fastest per step (flat as the shape grows:
linear planning); the load average is printed under it. Planning 10,000 steps allocates enough
objects that about every other run pays for one full garbage collection of the process (some
90 ms here, in proportion to everything the process holds, not to the plan): the median of the
largest shapes includes it, the fastest run does not.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))


def random_dag(steps: int, most_parents: int = 3, seed: int = 1) -> Any:
    """Each step after up to ``most_parents`` earlier steps chosen at random."""
    from bench.bench_canvas import tasks_module
    from orchestrator import Workflow

    rng = random.Random(seed)
    wf = Workflow(f"bench-random-{steps}")
    for j in range(steps):
        after = sorted(
            {f"s{rng.randrange(j)}" for _ in range(rng.randint(0, most_parents) if j else 0)}
        )
        wf.step(f"s{j}", tasks_module().noop, after=after or None)
    return wf.spec


def shapes() -> dict[str, Callable[[], Any]]:
    from bench import bench_canvas as bc

    found: dict[str, Callable[[], Any]] = {}
    for width in (250, 500, 1000, 5000, 10_000):
        found[f"fan-in {width}"] = lambda width=width: bc.wf_chord(width)
    for length in (1000, 10_000):
        found[f"chain {length}"] = lambda length=length: bc.wf_chain(length)
    for stages in (50, 500):
        found[f"ladder {stages}"] = lambda stages=stages: bc.wf_ladder(stages)
    found["random 1000"] = lambda: random_dag(1000)
    return found


def measure(spec: Any, repeat: int) -> tuple[list[float], int]:
    """CPU milliseconds of each ``build_plan``, and the plan's number of segments."""
    from orchestrator.core.planner import build_plan

    assert spec.version  # hashed once and cached on the spec: not planning
    times: list[float] = []
    for _ in range(repeat):
        started = time.process_time()
        plan = build_plan(spec)
        times.append((time.process_time() - started) * 1000)
    return times, len(plan.segments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="plans per shape (default 5)")
    parser.add_argument("--only", default="", help="only the shapes whose name contains this")
    args = parser.parse_args(argv)
    print("| shape | steps | segments | best ms | median ms | best µs/step |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    for name, make in shapes().items():
        if args.only in name:
            spec = make()
            times, segments = measure(spec, max(1, args.repeat))
            best, median, steps = min(times), statistics.median(times), len(spec.steps)
            print(
                f"| {name} | {steps} | {segments} | {best:.1f} | {median:.1f} "
                f"| {best * 1000 / steps:.1f} |",
                flush=True,
            )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
