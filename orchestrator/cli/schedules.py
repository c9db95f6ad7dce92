"""``orchestrator schedules``: scheduled workflows, their inputs, overlap and next fire time."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import emit_json, table
from orchestrator.core import registry
from orchestrator.core.spec import WorkflowSpec
from orchestrator.ops.schedule import describe_schedule, next_fire


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedules = sub.add_parser(
        "schedules", help="list scheduled workflows and when beat fires them next (UTC)"
    )
    schedules.add_argument("--json", action="store_true", help="print JSON")
    schedules.set_defaults(handler=cmd_schedules)


def cmd_schedules(args: argparse.Namespace) -> int:
    default_services().load_modules()
    now = datetime.now(UTC)
    specs = sorted(registry.all_workflows(), key=lambda s: s.name)
    rows = [describe(spec, now) for spec in specs if spec.schedule is not None]
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no scheduled workflows (add `schedule:` to a workflow)")
        return 0
    print(
        table(
            ["workflow", "schedule", "overlap", "inputs", "next fire"],
            [
                [
                    r["workflow"],
                    r["schedule"],
                    r["overlap"],
                    json.dumps(r["inputs"]),
                    _when(r["next_fire_time"]),
                ]
                for r in rows
            ],
        )
    )
    return 0


def describe(spec: WorkflowSpec, now: datetime) -> dict[str, Any]:
    """One scheduled workflow as ``orchestrator schedules`` shows it."""
    schedule = spec.schedule
    if schedule is None:
        raise ValueError(f"workflow {spec.name!r} has no schedule")
    upcoming = next_fire(schedule.cron, schedule.every, now)
    return {
        "workflow": spec.name,
        "schedule": describe_schedule(schedule.cron, schedule.every),
        "cron": schedule.cron,
        "every": schedule.every,
        "inputs": dict(schedule.inputs),
        "overlap": schedule.overlap,
        "next_fire_time": upcoming.isoformat() if upcoming else None,
    }


def _when(iso: str | None) -> str:
    return "never" if iso is None else iso.replace("+00:00", "Z")
