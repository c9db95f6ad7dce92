"""``orchestrator dev``: Redis, PostgreSQL, a worker, beat and Flower in one foreground command."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev",
        help="run the whole stack for development in the foreground (Ctrl-C stops it)",
        description="Start Redis and PostgreSQL (embedded ones unless ORCHESTRATOR_* URLs are "
        "set), apply the migrations, then run a worker, beat and Flower until Ctrl-C. For "
        "development only: production runs the services of docker-compose.yml.",
    )
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".orchestrator"),
        help="embedded servers' data, logs, beat schedule, Flower credentials (.orchestrator)",
    )
    dev.add_argument("--concurrency", "-c", type=_positive, default=2, help="worker processes (2)")
    dev.add_argument("--no-beat", dest="beat", action="store_false", help="do not start beat")
    dev.add_argument("--no-flower", dest="flower", action="store_false", help="do not start Flower")
    dev.add_argument(
        "--reload",
        action="store_true",
        help="restart the worker and beat when a .py or .yaml file of the project changes",
    )
    dev.set_defaults(handler=cmd_dev)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_dev(args: argparse.Namespace) -> int:
    from orchestrator.dev.server import DevOptions, run

    options = DevOptions(
        args.data_dir, args.concurrency, beat=args.beat, flower=args.flower, reload=args.reload
    )
    return run(options)
