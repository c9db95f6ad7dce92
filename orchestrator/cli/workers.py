"""``orchestrator workers``: the workers heard from lately, live or lost, with their host, pid,
queues, concurrency, the steps they run and their last heartbeat (``orchestrator.workers()``)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from orchestrator.cli.output import emit_json, table
from orchestrator.client import workers as list_workers
from orchestrator.ops.workers import DROPPED_AFTER, LOST_AFTER, START_WORKER
from orchestrator.records import WorkerInfo

COLUMNS = ["worker", "state", "pid", "queues", "concurrency", "running", "up", "heartbeat", "tasks"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workers = sub.add_parser(
        "workers",
        help="workers: live or lost, their queues, concurrency, running steps and heartbeat",
    )
    workers.add_argument("--tasks", action="store_true", help="list each worker's tasks")
    workers.add_argument("--json", action="store_true", help="print JSON")
    workers.set_defaults(handler=cmd_workers)


def cmd_workers(args: argparse.Namespace) -> int:
    found = list_workers()
    if args.json:
        emit_json([{**asdict(w), "state": w.state, "host": w.host} for w in found])
        return 0
    if not found:
        print(f"no live worker; start one: {START_WORKER}")
        return 0
    now = time.time()
    rows = [
        (
            w.name,
            w.state,
            w.pid,
            ", ".join(w.queues),
            w.concurrency,
            len(w.running),
            f"{now - w.started_at:.0f}s",
            f"{w.silent_for:.0f}s ago",
            len([t for t in w.tasks if not t.startswith("orchestrator.")]),
        )
        for w in found
    ]
    print(table(COLUMNS, rows))
    _running(found)
    if any(w.lost for w in found):
        print(
            f"\nlost: no heartbeat for over {LOST_AFTER:.0f}s (it died, hangs or cannot reach "
            f"Redis); listed until {DROPPED_AFTER / 60:.0f} minutes without one. The reconciler "
            "recovers its steps once their leases lapse."
        )
    for worker in found if args.tasks else []:
        print(f"\n{worker.name}:\n  " + "\n  ".join(worker.tasks))
    return 0


def _running(found: list[WorkerInfo]) -> None:
    busy = [w for w in found if w.running]
    if not busy:
        return
    print("\nrunning steps")
    for worker in busy:
        for run_id, step_id in worker.running:
            print(f"  {worker.name}: run {run_id} step {step_id}")
