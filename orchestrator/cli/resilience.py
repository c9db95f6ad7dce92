"""Resilience commands: ``breakers`` and ``dlq list|show|replay``."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import emit_json, table
from orchestrator.engine.replay import replay
from orchestrator.errors import OrchestratorError
from orchestrator.records import DeadLetterRecord


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    breakers = sub.add_parser("breakers", help="every circuit breaker with its state and counts")
    breakers.add_argument("--json", action="store_true", help="print JSON")
    breakers.set_defaults(handler=cmd_breakers)

    dlq = sub.add_parser("dlq", help="dead letters: steps and messages that failed for good")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)
    listing = dlq_sub.add_parser("list", help="dead letters, newest first")
    listing.add_argument("--all", action="store_true", help="include replayed ones")
    listing.add_argument("--limit", "-n", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_dlq_list)
    show = dlq_sub.add_parser("show", help="one dead letter with its arguments and traceback")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_dlq_show)
    replay = dlq_sub.add_parser(
        "replay", help="replay: a workflow step retries its run; a plain task is sent again"
    )
    replay.add_argument("id", type=int)
    replay.set_defaults(handler=cmd_dlq_replay)


def cmd_breakers(args: argparse.Namespace) -> int:
    store = default_services().breakers
    rows = []
    for name in store.names():
        state = store.get(name)
        last = store.history(name, 1)
        rows.append({"name": name, **asdict(state), "last_change": last[0] if last else None})
    if args.json:
        emit_json(rows)
        return 0
    print(
        table(
            ["breaker", "state", "consecutive failures", "failures", "successes", "changed"],
            [
                (
                    r["name"],
                    r["state"],
                    r["failures"],
                    r["total_failures"],
                    r["successes"],
                    _ago(r["last_change"]),
                )
                for r in rows
            ],
        )
    )
    return 0


def _ago(change: dict[str, Any] | None) -> str:
    if not change:
        return "-"
    return f"{change['from']}->{change['to']} {time.time() - change['at']:.0f}s ago"


def cmd_dlq_list(args: argparse.Namespace) -> int:
    letters = default_services().history.dead_letters(args.limit, include_replayed=args.all)
    if args.json:
        emit_json([asdict(d) for d in letters])
        return 0
    print(
        table(
            ["id", "created", "reason", "task", "run", "step", "error"],
            [
                (d.id, d.created_at, d.reason, d.task, d.run_id, d.step_id, (d.error or "")[:60])
                for d in letters
            ],
        )
    )
    return 0


def _letter(letter_id: int) -> DeadLetterRecord:
    letter = default_services().history.dead_letter(letter_id)
    if letter is None:
        raise OrchestratorError(f"dead letter {letter_id} does not exist; `orchestrator dlq list`")
    return letter


def cmd_dlq_show(args: argparse.Namespace) -> int:
    data = asdict(_letter(args.id))
    if args.json:
        emit_json(data)
        return 0
    for key, value in data.items():
        if key != "traceback":
            print(f"{key:>15}: {value}")
    print(data["traceback"] or "")
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    print(replay(default_services(), args.id))
    return 0
