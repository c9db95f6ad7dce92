"""Run commands: ``run`` (asking the live workers first), ``runs``, and run control.

Before ``run`` submits, it asks the registry of live workers (``orchestrator.ops.workers``)
whether each step's task would run: a step whose queue only workers without its task consume
would be dead-lettered, so nothing is submitted; a step that would wait is noted. ``--wait``
prints the progress, the steps that retry and what a waiting step waits for.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import as_dict, duration, emit_json, table
from orchestrator.client import get_run, list_runs, run_workflow
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.services import Services
from orchestrator.engine.submit import resolve
from orchestrator.errors import InputError, WorkflowFailed
from orchestrator.ops.waiting import Waiting, waiting_now
from orchestrator.ops.workers import live_workers, submit_check
from orchestrator.records import RunRecord, StepRecord
from orchestrator.status import RunStatus, StepStatus, Trigger

SHOWN = 4  # steps named on a progress line


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
        "--priority",
        type=int,
        default=None,
        metavar="0-9",
        help="0 (lowest, the default) .. 9: the run's steps go ahead of lower ones in a queue",
    )
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
        control.add_argument("run_id", help="a run id, or a prefix of it that no other run shares")
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
    rt = default_services()
    spec = resolve(rt, args.workflow)
    inputs = parse_inputs(args.input, spec.name)
    refused, notes = submit_check(rt.app, spec, live_workers(rt))
    if refused:
        for problem in refused:
            print(f"error: {problem}", file=sys.stderr)
        print("nothing was submitted", file=sys.stderr)
        return 1
    handle = run_workflow(
        spec,
        inputs,
        trigger=Trigger.CLI,
        idempotency_key=args.idempotency_key,
        priority=args.priority,
    )
    for note in notes:  # once it is submitted: a server that is down says so first
        print(f"note: {note}", file=sys.stderr)
    if not args.wait:
        print(json.dumps({"run_id": handle.id}) if args.json else handle.id)
        return 0
    print(f"run {handle.id} of {spec.name}: {len(spec.steps)} steps", file=sys.stderr)
    progress = Progress(handle, rt)
    try:
        output = handle.wait(timeout=args.timeout, on_progress=progress, progress_every=0.5)
    except (WorkflowFailed, TimeoutError) as exc:
        progress.done()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress.done()
    print(json.dumps(output, indent=None if args.json else 2, default=str))
    return 0


class Progress:
    """Prints ``[done/total] status: what runs, retries or waits`` while a run is waited on."""

    def __init__(self, handle: RunHandle, rt: Services) -> None:
        self.handle = handle
        self.rt = rt
        self.tty = sys.stderr.isatty()
        self.last = ""

    def __call__(self, record: RunRecord) -> None:
        steps = self.handle.steps()
        waits = waiting_now(self.rt, record, steps)
        line = progress_line(record, steps, waits or [])
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


def progress_line(record: RunRecord, steps: list[StepRecord], waits: list[Waiting]) -> str:
    """``[done/total] status: running steps; retrying ones and when; what stuck ones wait for``."""
    done = sum(s.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED) for s in steps)
    running = [s.step_id for s in steps if s.status == StepStatus.RUNNING]
    parts = [", ".join(running[:3])] if running else []
    waiting = {w.step_id: w for w in waits}
    parts += [
        f"{s.step_id} retrying"
        for s in steps
        if s.status == StepStatus.RETRYING and s.step_id not in waiting
    ]
    for w in waits:
        if w.reason == "retry_delay":
            parts.append(f"{w.step_id} retrying: {w.detail}")
        elif w.stuck or w.reason != "queue":
            parts.append(f"{w.step_id} waits for {w.reason}: {w.detail}")
    more = f"; and {len(parts) - SHOWN} more" if len(parts) > SHOWN else ""
    listed = f": {'; '.join(parts[:SHOWN])}{more}" if parts else ""
    return f"[{done}/{len(steps)}] {record.status}{listed}"


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
