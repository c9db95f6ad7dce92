"""Workflow commands: ``graph`` (the DAG as a picture) and ``validate``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.app import default_services
from orchestrator.cli.output import emit_json
from orchestrator.client import get_run
from orchestrator.core import registry
from orchestrator.core.graph_drawing import to_png, to_svg
from orchestrator.core.graph_layout import GraphNode
from orchestrator.core.graph_text import to_dot, to_mermaid, to_text
from orchestrator.core.spec import WorkflowSpec, check_tasks
from orchestrator.engine.submit import resolve
from orchestrator.errors import OrchestratorError

FORMATS = ("mermaid", "dot", "svg", "png", "text")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = sub.add_parser("graph", help="draw a workflow's DAG (coloured by status for a run)")
    graph.add_argument("workflow", help="a workflow name or a YAML file")
    graph.add_argument("--format", "-f", choices=FORMATS, default="text")
    graph.add_argument("--run", help="colour the steps by this run's status")
    graph.add_argument("--output", "-o", help="write to this file (png needs one)")
    graph.set_defaults(handler=cmd_graph)

    validate = sub.add_parser("validate", help="check YAML workflows without running them")
    validate.add_argument("path", nargs="+", help="YAML files or directories")
    validate.add_argument("--json", action="store_true", help="print JSON")
    validate.set_defaults(handler=cmd_validate)


def _spec(name: str) -> WorkflowSpec:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return registry.load_file(path)
    return resolve(default_services(), name)


def cmd_graph(args: argparse.Namespace) -> int:
    spec = _spec(args.workflow)
    status = {}
    if args.run:
        status = {s.step_id: s.status for s in get_run(args.run).steps()}
    nodes = [GraphNode(s.id, s.task, s.after, status.get(s.id)) for s in spec.steps]
    drawn: str | bytes
    if args.format == "png":
        drawn = to_png(nodes, title=spec.name)
    elif args.format == "text":
        drawn = to_text(nodes, color=sys.stdout.isatty() and not args.output)
    else:
        draw = {"mermaid": to_mermaid, "dot": to_dot, "svg": to_svg}[args.format]
        drawn = draw(nodes, title=spec.name)
    if args.output:
        target = Path(args.output)
        target.write_bytes(drawn if isinstance(drawn, bytes) else drawn.encode())
        print(f"wrote {target} ({args.format}, {len(spec.steps)} steps)", file=sys.stderr)
    elif isinstance(drawn, bytes):
        sys.stdout.buffer.write(drawn)
    else:
        print(drawn)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    rt = default_services()
    rt.load_modules()
    files = [f for p in args.path for f in _yaml_files(Path(p))]
    results = []
    for file in files:
        try:
            spec = registry.load_file(file)
            check_tasks(spec, rt.catalog)
            results.append(
                {"file": str(file), "workflow": spec.name, "ok": True, "steps": len(spec.steps)}
            )
        except OrchestratorError as exc:
            results.append({"file": str(file), "ok": False, "error": str(exc)})
    if args.json:
        emit_json(results)
    for r in results if not args.json else []:
        print(
            f"ok    {r['file']}: {r['workflow']} ({r['steps']} steps)"
            if r["ok"]
            else f"error {r['file']}: {r['error']}"
        )
    return 0 if files and all(r["ok"] for r in results) else 1


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if not path.exists():
        raise OrchestratorError(f"{path} does not exist")
    return [path]
