"""``orchestrator signal RUN NAME -d JSON``: send a signal to a run (``run.signal``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from orchestrator.client import get_run
from orchestrator.errors import SignalError


def register(sub: Any) -> None:
    signal = sub.add_parser(
        "signal",
        help="send a signal to a run: it ends the wait_for steps waiting for it, is kept for "
        "one reached later, and running steps read it",
    )
    signal.add_argument("run_id", help="a run id, or a prefix of it that no other run shares")
    signal.add_argument("name", help="the signal's name (what a wait_for step waits for)")
    signal.add_argument("-d", "--data", default="null", help="the payload, as JSON (default: null)")
    signal.add_argument("--sender", default=None, help="who sends it (default: user@host)")
    signal.set_defaults(handler=cmd_signal)


def cmd_signal(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.data)
    except json.JSONDecodeError as exc:
        raise SignalError(
            f"signal {args.name!r} to run {args.run_id}: -d is not JSON ({exc}); quote it, "
            """e.g. -d '{"by": "ann"}'"""
        ) from exc
    handle = get_run(args.run_id)
    sent = handle.signal(args.name, payload, sender=args.sender)
    print(f"run {handle.id}: signal {sent.name!r} sent ({sent.size} bytes, from {sent.sender})")
    return 0
