"""Workflow commands: ``graph`` (the DAG as a picture) and ``validate``.

``validate`` checks each file on its own (without ``PATH``: ``ORCHESTRATOR_WORKFLOWS_PATH``), as
workers load them: one bad file is reported with its workflow, step and reason, and the others
are still checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import emit_json
from orchestrator.client import get_run
from orchestrator.core import registry
from orchestrator.core.graph_drawing import to_png, to_svg
from orchestrator.core.graph_layout import GraphNode
from orchestrator.core.graph_text import to_dot, to_mermaid, to_text
from orchestrator.core.shape_checks import check_children
from orchestrator.core.spec import StepSpec, WorkflowSpec
from orchestrator.core.task_checks import check_tasks
from orchestrator.engine.services import CeleryCatalog
from orchestrator.engine.submit import resolve
from orchestrator.errors import OrchestratorError, ValidationError, WorkflowNotFound

FORMATS = ("mermaid", "dot", "svg", "png", "text")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    graph = sub.add_parser("graph", help="draw a workflow's DAG (coloured by status for a run)")
    graph.add_argument("workflow", help="a workflow name or a YAML file")
    graph.add_argument("--format", "-f", choices=FORMATS, default="text")
    graph.add_argument("--run", help="colour the steps by this run's status")
    graph.add_argument("--output", "-o", help="write to this file (png needs one)")
    graph.set_defaults(handler=cmd_graph)

    validate = sub.add_parser("validate", help="check YAML workflows without running them")
    validate.add_argument(
        "path", nargs="*", help="YAML files or directories (ORCHESTRATOR_WORKFLOWS_PATH)"
    )
    validate.add_argument("--json", action="store_true", help="print JSON")
    validate.set_defaults(handler=cmd_validate)


def _spec(name: str) -> WorkflowSpec:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return registry.load_file(path)
    return resolve(default_services(), name)


def _label(step: StepSpec) -> str:
    """A step's task, or the child workflow it runs; a ``for_each`` says what it maps over."""
    label = f"workflow {step.workflow}" if step.workflow else step.task
    return f"{label} for each of {step.for_each}" if step.for_each else label


def cmd_graph(args: argparse.Namespace) -> int:
    spec = _spec(args.workflow)
    status = {}
    if args.run:
        status = {s.step_id: s.status for s in get_run(args.run).steps()}
    nodes = [GraphNode(s.id, _label(s), s.after, status.get(s.id)) for s in spec.steps]
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
    rt.import_tasks()
    paths = args.path or [rt.settings.workflows_path]
    if not args.path:
        print(f"checking ORCHESTRATOR_WORKFLOWS_PATH={paths[0]}", file=sys.stderr)
    files = [f for p in paths for f in _yaml_files(Path(p))]
    loaded = [_load(file) for file in files]  # all first: a child may be in a later file
    results = [_check(file, found, rt.catalog) for file, found in zip(files, loaded, strict=True)]
    if args.json:
        emit_json(results)
    for r in results if not args.json else []:
        print(
            f"ok    {r['file']}: {r['workflow']} ({r['steps']} steps)"
            if r["ok"]
            else f"error {r['file']}: {r['error']}"
        )
    if not files:
        print(f"no *.yaml or *.yml file in {', '.join(paths)}", file=sys.stderr)
    return 0 if files and all(r["ok"] for r in results) else 1


def _load(file: Path) -> WorkflowSpec | ValidationError:
    try:
        return registry.load_file(file)
    except ValidationError as exc:
        return exc


def _registered(name: str) -> WorkflowSpec | None:
    try:
        return registry.get(name)
    except WorkflowNotFound:
        return None


def _check(
    file: Path, loaded: WorkflowSpec | ValidationError, catalog: CeleryCatalog
) -> dict[str, Any]:
    """One file's verdict: its workflow and steps, or what is wrong (workflow, step, reason):
    its tasks, and the child workflows its steps run (registered, no cycle)."""
    try:
        if isinstance(loaded, ValidationError):
            raise loaded
        spec = loaded
        check_tasks(spec, catalog)
        check_children(spec, _registered)
    except ValidationError as exc:
        return {
            "file": str(file),
            "ok": False,
            "workflow": exc.workflow,
            "step": exc.step,
            "error": str(exc),
        }
    return {"file": str(file), "workflow": spec.name, "ok": True, "steps": len(spec.steps)}


def _yaml_files(path: Path) -> list[Path]:
    if not path.exists():
        raise OrchestratorError(f"{path} does not exist")
    return registry.workflow_files(path)
