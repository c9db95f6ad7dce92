"""``orchestrator ui``: serve the console (``orchestrator.web``) in the foreground."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ui = sub.add_parser(
        "ui",
        help="serve the web console: runs, DAGs, workflows, dead letters (Ctrl-C stops it)",
        description="Serve the console on ORCHESTRATOR_UI_HOST:ORCHESTRATOR_UI_PORT "
        "(127.0.0.1:8765) behind the login ORCHESTRATOR_UI_AUTH=user:password; it refuses to "
        "start without one.",
    )
    ui.add_argument("--host", help="address to bind (ORCHESTRATOR_UI_HOST, 127.0.0.1)")
    ui.add_argument("--port", "-p", type=int, help="port (ORCHESTRATOR_UI_PORT, 8765)")
    ui.set_defaults(handler=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from orchestrator.web import serve  # FastAPI and uvicorn load only for this command

    serve(host=args.host, port=args.port)
    return 0
