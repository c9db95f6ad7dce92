"""Run commands: ``run``, ``runs``, ``show``, ``cancel``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import as_dict, color_enabled, duration, emit_json, table
from orchestrator.client import get_run, list_runs, run_workflow
from orchestrator.core.graph_layout import GraphNode
from orchestrator.core.graph_text import to_text
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.submit import resolve
from orchestrator.errors import InputError, WorkflowFailed
from orchestrator.records import RunRecord, StepRecord
from orchestrator.status import RunStatus, StepStatus, Trigger


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="start a run of a workflow (optionally wait for it)")
    run.add_argument("workflow", help="a registered workflow name (Python or YAML)")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an input; VALUE is parsed as JSON when it can be (repeatable)",
    )
    run.add_argument("--idempotency-key", help="a second run with this key returns the first")
    run.add_argument(
        "--wait", action="store_true", help="wait, showing progress, and print the output"
    )
    run.add_argument("--timeout", type=float, default=None, help="seconds --wait waits (forever)")
    run.add_argument("--json", action="store_true", help="print JSON")
    run.set_defaults(handler=cmd_run)

    runs = sub.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--workflow", "-w", help="only runs of this workflow")
    runs.add_argument("--status", "-s", choices=list(RunStatus), help="only runs with this status")
    runs.add_argument("--limit", "-n", type=int, default=20, help="at most this many (20)")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(handler=cmd_runs)

    show = sub.add_parser("show", help="a run's steps, attempts, errors, timings and DAG")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    for name, text in (
        ("cancel", "cancel a run: nothing new starts, running steps finish"),
        ("pause", "pause a run: steps not yet started wait"),
        ("resume", "resume a paused run"),
        (
            "retry",
            "start a new run of a failed or cancelled run, keeping the "
            "outputs of the steps that succeeded",
        ),
    ):
        control = sub.add_parser(name, help=text)
        control.add_argument("run_id")
        control.set_defaults(handler=cmd_control, action=name)


def parse_inputs(pairs: list[str], workflow: str) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON where they parse, strings otherwise."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InputError(workflow, f"--input {pair!r} is not KEY=VALUE")
        try:
            inputs[key] = json.loads(raw)
        except json.JSONDecodeError:
            inputs[key] = raw
    return inputs


def cmd_run(args: argparse.Namespace) -> int:
    spec = resolve(default_services(), args.workflow)
    handle = run_workflow(
        spec,
        parse_inputs(args.input, spec.name),
        trigger=Trigger.CLI,
        idempotency_key=args.idempotency_key,
    )
    if not args.wait:
        print(json.dumps({"run_id": handle.id}) if args.json else handle.id)
        return 0
    print(f"run {handle.id} of {spec.name}: {len(spec.steps)} steps", file=sys.stderr)
    progress = Progress(handle)
    try:
        output = handle.wait(timeout=args.timeout, on_progress=progress, progress_every=0.5)
    except WorkflowFailed as exc:
        progress.done()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress.done()
    print(json.dumps(output, indent=None if args.json else 2, default=str))
    return 0


class Progress:
    """Prints ``steps done / total, current step`` while a run is waited on."""

    def __init__(self, handle: RunHandle) -> None:
        self.handle = handle
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, record: RunRecord) -> None:
        steps = self.handle.steps()
        done = sum(s.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in steps)
        running = [
            s.step_id for s in steps if s.status in (StepStatus.RUNNING, StepStatus.RETRYING)
        ]
        line = f"[{done}/{len(steps)}] {record.status}" + (
            f": {', '.join(running[:3])}" if running else ""
        )
        if line != self.last:
            print(
                ("\r\033[K" if self.tty else "") + line,
                end="" if self.tty else "\n",
                file=sys.stderr,
                flush=True,
            )
            self.last = line

    def done(self) -> None:
        self(self.handle.record())
        if self.tty:
            print(file=sys.stderr)


def cmd_runs(args: argparse.Namespace) -> int:
    runs = list_runs(workflow=args.workflow, status=args.status, limit=args.limit)
    if args.json:
        emit_json([as_dict(r) for r in runs])
        return 0
    rows = [
        (
            r.id,
            r.workflow,
            r.status,
            r.trigger,
            r.created_at,
            duration(r.started_at, r.finished_at),
            r.error_step,
        )
        for r in runs
    ]
    print(table(["run", "workflow", "status", "trigger", "created", "took", "failed at"], rows))
    return 0


def flower_link(step: StepRecord) -> str:
    return f"{default_services().settings.flower_url.rstrip('/')}/task/{step.celery_task_id}"


def cmd_show(args: argparse.Namespace) -> int:
    handle = get_run(args.run_id)
    record, steps = handle.record(), handle.steps()
    if args.json:
        emit_json(
            {
                "run": as_dict(record),
                "steps": [{**as_dict(s), "flower": flower_link(s)} for s in steps],
                "events": [
                    {"at": at, "kind": kind, "detail": detail}
                    for at, kind, detail in handle.events()
                ],
            }
        )
        return 0
    print(
        f"run {record.id}  workflow {record.workflow}  {record.status}  "
        f"({duration(record.started_at, record.finished_at)}, trigger {record.trigger})"
    )
    if record.error:
        print(f"error at {record.error_step or '-'}: {record.error}")
    print()
    print(
        table(
            ["step", "task", "status", "attempts", "took", "error", "flower"],
            [
                (
                    s.step_id,
                    s.task,
                    s.status,
                    s.attempts,
                    duration(s.started_at, s.finished_at),
                    _short(s.error),
                    flower_link(s),
                )
                for s in steps
            ],
        )
    )
    for step in steps:
        for attempt in step.attempt_log:
            if attempt.status in (StepStatus.FAILED, StepStatus.RETRYING):
                print(
                    f"\n{step.step_id} attempt {attempt.attempt} on {attempt.worker} "
                    f"({attempt.status}): {attempt.error}"
                )
    for at, kind, detail in handle.events():
        print(f"\n{_cell_time(at)} {kind}" + (f": {detail}" if detail else ""))
    print()
    print(to_text(graph_nodes(handle, steps), color=color_enabled()))
    return 0


def graph_nodes(handle: RunHandle, steps: list[StepRecord]) -> list[GraphNode]:

    record = handle.record()
    spec_data = default_services().history.load_spec(record.workflow_version) or {"steps": []}
    status = {s.step_id: s.status for s in steps}
    return [
        GraphNode(s["id"], s["task"], tuple(s.get("after") or ()), status.get(s["id"]))
        for s in spec_data["steps"]
    ]


def _cell_time(at: Any) -> str:
    return str(at.astimezone().strftime("%Y-%m-%d %H:%M:%S"))


def _short(text: str | None, width: int = 60) -> str | None:
    if not text:
        return None
    line = text.strip().splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def cmd_control(args: argparse.Namespace) -> int:
    handle = get_run(args.run_id)
    if args.action == "cancel":
        changed = handle.cancel(reason="cancelled from the CLI")
        print(f"run {handle.id} " + ("cancelled" if changed else "had already ended"))
    elif args.action == "retry":
        print(f"run {handle.id} retried as run {handle.retry().id}")
    else:
        getattr(handle, args.action)()
        print(f"run {handle.id} {args.action}d")
    return 0
