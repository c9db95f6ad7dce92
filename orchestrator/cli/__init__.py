"""The ``orchestrator`` command: run and inspect workflows, control runs, manage the database.

Each command group lives in a module of this package that exposes ``register(subparsers)``;
``main`` turns an error the user can fix (``OrchestratorError``, a server away, a bad setting:
:mod:`orchestrator.cli.failures`) into a one-line message and exit status 1, and exits quietly
when its output is closed early (``orchestrator runs | head``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from orchestrator.cli import db, dev, resilience, runs, schedules, show, ui, workers, workflows
from orchestrator.cli import signals as signal_command
from orchestrator.cli.failures import explain
from orchestrator.cli.output import LevelPrefix

COMMAND_MODULES = (
    runs,
    show,
    workflows,
    workers,
    resilience,
    schedules,
    db,
    dev,
    ui,
    signal_command,
)
SIGPIPE_EXIT = 141  # as a shell reports a process that a closed pipe stopped


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
    handler = logging.StreamHandler()
    handler.setFormatter(LevelPrefix())
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        code = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say
        return SIGPIPE_EXIT
    except Exception as exc:
        message = explain(exc)
        if message is None:
            if args.verbose:
                raise
            message = f"{type(exc).__name__}: {exc} (a bug? `orchestrator -v …` shows where)"
        print(f"error: {message}", file=sys.stderr)
        return 1
    return int(code or 0)
