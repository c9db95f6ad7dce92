"""``orchestrator workers``: the live workers, with their queues and registered tasks."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from orchestrator.app import default_services
from orchestrator.cli.output import emit_json, table
from orchestrator.ops.workers import START_WORKER
from orchestrator.stores.redis.workers import WorkerRegistry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workers = sub.add_parser(
        "workers", help="live workers: their queues, concurrency and registered tasks"
    )
    workers.add_argument("--tasks", action="store_true", help="list each worker's tasks")
    workers.add_argument("--json", action="store_true", help="print JSON")
    workers.set_defaults(handler=cmd_workers)


def cmd_workers(args: argparse.Namespace) -> int:
    live = WorkerRegistry.from_url(default_services().settings.state_url).live()
    if args.json:
        emit_json([asdict(w) for w in live])
        return 0
    if not live:
        print(f"no live worker; start one: {START_WORKER}")
        return 0
    now = time.time()
    rows = [
        (
            w.name,
            ", ".join(w.queues),
            w.concurrency,
            w.pid,
            f"{now - w.started_at:.0f}s",
            f"{now - w.seen_at:.0f}s ago",
            len([t for t in w.tasks if not t.startswith("orchestrator.")]),
        )
        for w in live
    ]
    print(table(["worker", "queues", "concurrency", "pid", "up", "seen", "tasks"], rows))
    for worker in live if args.tasks else []:
        print(f"\n{worker.name}:\n  " + "\n  ".join(worker.tasks))
    return 0
