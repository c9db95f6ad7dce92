"""The submit path alone: ``run_workflow`` timed in parts, with no worker.

Run ``python bench/bench_submit.py [--runs N]`` from the project root (PostgreSQL and Redis on
127.0.0.1, as in ``bench/bench_canvas.py``). The script takes a Redis db no test session holds
(broker, result backend and run state) and a database of its own, submits ``--runs`` runs of a
3-step chain and of a chord of ``--width`` roots to a queue no worker consumes, and removes all
of it at the end.

Each part of a submit is timed where the client calls it (a wrapper around the call, so a part
that is not called any more shows 0 calls): the first Redis call (``ping``, ``init_run`` or
``begin_run``), ``create_run`` (one transaction), publishing (``CanvasBuilder.publish``), what
follows publishing (``mark_published``: a second transaction; or ``confirm_published``: a Redis
round trip), and ``build_plan``. The table gives, per shape, the median of the whole
``run_workflow`` call, and each part's calls per run and median milliseconds per call.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
QUEUE = "bench-submit-nowhere"
PARTS = {  # label: (where, attribute)
    "ping": ("state", "ping"),
    "init_run": ("state", "init_run"),
    "begin_run": ("state", "begin_run"),
    "create_run": ("history", "create_run"),
    "publish": ("builder", "publish"),
    "mark_published": ("history", "mark_published"),
    "confirm_published": ("state", "confirm_published"),
    "build_plan": ("planner", "build_plan"),
}


@contextlib.contextmanager
def servers() -> Iterator[dict[str, str]]:
    """A Redis db and a database of this script's own, migrated; the environment naming them."""
    from orchestrator.stores.postgres.migrate import upgrade
    from orchestrator.testing.servers import (
        claim_redis_db,
        create_database,
        drop_database,
        release_redis_db,
    )

    redis_url = claim_redis_db(REDIS_URL, f"bench-submit-{uuid.uuid4().hex[:8]}")
    database_url = create_database(PG_SERVER, "orchestrator_bench_submit")
    try:
        from orchestrator.settings import Settings

        upgrade(Settings(database_url=database_url).sqlalchemy_url)
        yield {
            "ORCHESTRATOR_BROKER_URL": redis_url,
            "ORCHESTRATOR_RESULT_BACKEND": redis_url,
            "ORCHESTRATOR_REDIS_URL": redis_url,
            "ORCHESTRATOR_DATABASE_URL": database_url,
            "ORCHESTRATOR_TASK_MODULES": "bench.tasks",
            "ORCHESTRATOR_WORKFLOWS_PATH": str(ROOT / "bench"),  # no YAML workflows here
        }
    finally:
        release_redis_db(redis_url)
        drop_database(database_url)


def timed(target: Any, name: str, times: list[float]) -> Callable[[], None]:
    """Wrap ``target.name`` so that each call's seconds are appended to ``times``; the undo."""
    original = getattr(target, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - started)

    setattr(target, name, wrapper)
    return lambda: setattr(target, name, original)


def targets(rt: Any) -> dict[str, list[Any]]:
    """Where each kind of part is looked up: the adapters, the builder, every planner import."""
    from orchestrator.engine import canvas, services, submit

    return {
        "state": [rt.state],
        "history": [rt.history],
        "builder": [canvas.CanvasBuilder],
        "planner": [m for m in (submit, services) if hasattr(m, "build_plan")],
    }


def measure(workflow: Any, runs: int) -> dict[str, Any]:
    """``runs`` submits of ``workflow``: the median total and each part's calls and median."""
    from orchestrator import run_workflow
    from orchestrator.app import default_services

    rt = default_services()
    parts: dict[str, list[float]] = defaultdict(list)
    undo = [
        timed(target, attribute, parts[label])
        for label, (where, attribute) in PARTS.items()
        for target in targets(rt)[where]
        if hasattr(target, attribute)
    ]
    totals = []
    try:
        for _ in range(runs):
            started = time.perf_counter()
            run_workflow(workflow)
            totals.append(time.perf_counter() - started)
    finally:
        for step in reversed(undo):
            step()
    return {
        "total_ms": statistics.median(totals) * 1000,
        "parts": {
            label: (len(parts[label]) / runs, statistics.median(parts[label]) * 1000)
            for label in PARTS
            if parts[label]
        },
    }


def shapes(width: int) -> dict[str, Any]:
    from bench.tasks import noop
    from orchestrator import Workflow

    chain = Workflow("bench-submit-chain")
    for i, step in enumerate("abc"):
        chain.step(step, noop, after="abc"[i - 1] if i else None, queue=QUEUE)
    chord = Workflow(f"bench-submit-chord-{width}")
    roots = [f"s{i}" for i in range(width)]
    for step in roots:
        chord.step(step, noop, queue=QUEUE)
    chord.step("join", noop, after=roots, queue=QUEUE)
    return {"3-step chain": chain, f"chord {width}->1": chord}


def table(results: dict[str, dict[str, Any]], runs: int) -> str:
    lines = [f"submit only, no worker; median of {runs} runs after 5 warm-up runs (ms)", ""]
    for shape, found in results.items():
        lines.append(f"{shape:<24}{'calls/run':>10}{'ms/call':>10}")
        lines.append(f"{'run_workflow (total)':<24}{1:>10.2f}{found['total_ms']:>10.2f}")
        for label, (calls, ms) in found["parts"].items():
            lines.append(f"{label:<24}{calls:>10.2f}{ms:>10.2f}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="submits per shape (200)")
    parser.add_argument("--width", type=int, default=250, help="the chord's roots (250)")
    args = parser.parse_args(argv)
    with servers() as env:
        os.environ.update(env)
        results = {}
        for shape, workflow in shapes(args.width).items():
            measure(workflow, 5)  # connections, imports, the spec's first write
            results[shape] = measure(workflow, args.runs if "chain" in shape else args.runs // 4)
    print(table(results, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
