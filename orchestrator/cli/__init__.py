"""The ``orchestrator`` command: run and inspect workflows, control runs, manage the database.

Each command group lives in a module of this package that exposes ``register(subparsers)``;
``main`` turns every ``OrchestratorError`` into a one-line message and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from orchestrator.cli import db, dev, resilience, runs, schedules, workflows
from orchestrator.errors import OrchestratorError

COMMAND_MODULES = (runs, workflows, resilience, schedules, db, dev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="Workflows on Celery: run them, watch them, control them.",
        epilog="Settings come from ORCHESTRATOR_* environment variables (see the README).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``orchestrator`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        code = args.handler(args)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
