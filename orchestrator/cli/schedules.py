"""``orchestrator schedules``: scheduled workflows (paused or not, last and next fire time), and
``schedules pause|resume NAME`` and ``schedules backfill NAME --from T1 --to T2``.

The work is :mod:`orchestrator.ops.schedule_control`'s; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import emit_json, table
from orchestrator.errors import BackfillError
from orchestrator.ops import schedule_control
from orchestrator.ops.schedule_control import BACKFILL_CONFIRM, BACKFILL_MAX

STATES = {True: "paused", False: "active", None: "unknown"}
HEADERS = [
    "workflow",
    "schedule",
    "state",
    "catchup",
    "overlap",
    "inputs",
    "last fire",
    "next fire",
]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedules = sub.add_parser(
        "schedules",
        help="list scheduled workflows (paused, last and next fire, UTC); pause, resume, backfill",
    )
    schedules.add_argument("--json", action="store_true", help="print JSON")
    schedules.set_defaults(handler=cmd_list)
    schedules.description = (
        "Without ACTION: list the scheduled workflows. Times are UTC; pause and resume take "
        "effect at beat's next fire, without restarting it."
    )
    actions = schedules.add_subparsers(dest="action", metavar="ACTION", required=False)
    for name, handler, text in (
        ("pause", cmd_pause, "stop starting runs from NAME's schedule (beat keeps running)"),
        ("resume", cmd_resume, "start runs again from NAME's next fire time"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("name", metavar="NAME", help="the workflow")
        action.set_defaults(handler=handler)
    backfill = actions.add_parser(
        "backfill",
        help="start one run per fire time in [--from, --to], keyed like beat's runs (never twice)",
    )
    backfill.add_argument("name", metavar="NAME", help="the workflow")
    backfill.add_argument("--from", dest="start", required=True, help="ISO time, e.g. 2026-11-01")
    backfill.add_argument(
        "--to", dest="end", required=True, help="ISO time (included); naive times are UTC"
    )
    backfill.add_argument(
        "--yes",
        action="store_true",
        help=f"start more than {BACKFILL_CONFIRM} fire times (at most {BACKFILL_MAX})",
    )
    backfill.add_argument(
        "--max", type=int, default=None, help="refuse when the range holds more fire times"
    )
    backfill.add_argument("--json", action="store_true", help="print JSON")
    backfill.set_defaults(handler=cmd_backfill)


def cmd_list(args: argparse.Namespace) -> int:
    rows = schedule_control.schedules(default_services(), datetime.now(UTC))
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print("no scheduled workflows (add `schedule:` to a workflow)")
        return 0
    print(
        table(
            HEADERS,
            [
                [
                    r["workflow"],
                    r["schedule"],
                    STATES[r["paused"]],
                    r["catchup"],
                    r["overlap"],
                    json.dumps(r["inputs"]),
                    _when(r["last_fire_time"], "-"),
                    _when(r["next_fire_time"], "never"),
                ]
                for r in rows
            ],
        )
    )
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    schedule_control.pause(default_services(), args.name)
    print(f"paused schedule of {args.name}: beat starts no run until `schedules resume`")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    schedule_control.resume(default_services(), args.name)
    print(f"resumed schedule of {args.name}: runs start again from its next fire time")
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    name = args.name
    start, end = _iso(name, "--from", args.start), _iso(name, "--to", args.end)
    limit = args.max if args.max is not None else BACKFILL_MAX if args.yes else BACKFILL_CONFIRM
    rt = default_services()
    _, times = schedule_control.backfill_times(rt, name, start, end, limit)
    total = len(times)
    if not args.json:
        print(f"backfill {name}: {total} fire time(s) from {_when(start)} to {_when(end)}")

    def progress(fire: datetime, run_id: str, new: bool) -> None:
        if not args.json:
            print(f"  {_when(fire)}  {'started' if new else 'already there'}  run {run_id}")

    done = schedule_control.backfill(rt, name, start, end, limit, progress)
    if args.json:
        emit_json(
            {
                "workflow": name,
                "fire_times": done.fire_times,
                "started": done.started,
                "existing": done.existing,
            }
        )
    else:
        print(f"backfill {name}: {len(done.started)} started, {len(done.existing)} already there")
    return 0


def _iso(workflow: str, option: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BackfillError(
            workflow, f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-11-01T02:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _when(moment: Any, missing: str = "never") -> str:
    if moment is None:
        return missing
    text = moment.isoformat() if isinstance(moment, datetime) else str(moment)
    return text.replace("+00:00", "Z")
