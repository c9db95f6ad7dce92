"""``orchestrator show RUN``: everything about one run, in the terminal or as JSON.

The run (status, times, trigger, inputs, output, error, its shared context), a table of its
steps (attempts, how long, the error or what the step waits for, and its task's page in Flower
where Flower has the task: never for a step that was not executed, i.e. skipped, cancelled or
carried over from the run it retries), each attempt with its worker, times and error, the
traceback of each failed step's last attempt, what the steps that have not started wait for, the
run's events and its DAG. Long inputs and outputs are shortened unless ``--full``, which also
shows every traceback and every item of a ``for_each`` step (without it, only the items that did
not succeed).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from typing import Any

from orchestrator.app import default_services
from orchestrator.cli.output import (
    as_dict,
    clock,
    color_enabled,
    duration,
    emit_json,
    shorten,
    table,
)
from orchestrator.client import get_run
from orchestrator.core.graph_layout import GraphNode
from orchestrator.core.graph_text import to_text
from orchestrator.engine.handle import RunHandle
from orchestrator.ops.waiting import Waiting, waiting_now
from orchestrator.records import RunRecord, StepRecord
from orchestrator.status import StepStatus

SHORT = 300  # characters of inputs and output shown without --full
ITEM = re.compile(r".+\[\d+\]")  # a for_each item's step id: parse[7]
ITEMS_LISTED = 10  # items that did not succeed, listed without --full


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show = sub.add_parser(
        "show", help="a run's inputs, output, steps, attempts, tracebacks, waits and DAG"
    )
    show.add_argument("run_id", help="a run id, or a prefix of it that no other run shares")
    show.add_argument(
        "--full",
        action="store_true",
        help="whole inputs, output and tracebacks, and every for_each item",
    )
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)


def flower_link(step: StepRecord) -> str | None:
    """The step's task page in Flower; None for a step no worker executed (Flower never saw it)."""
    if not step.attempt_log and step.attempts == 0:
        return None
    return f"{default_services().settings.flower_url.rstrip('/')}/task/{step.celery_task_id}"


def cmd_show(args: argparse.Namespace) -> int:
    handle = get_run(args.run_id)
    rt = default_services()
    record, steps = handle.record(), handle.steps()
    waits = waiting_now(rt, record, steps)
    if args.json:
        emit_json(_as_json(handle, record, steps, waits or []))
        return 0
    _run_lines(record, args.full)
    context = handle.context()
    if context:
        print(f"context {_value(context, args.full)}")
    waiting = {w.step_id: w for w in waits or []}
    shown, hidden = _visible(steps, args.full)
    rows = [
        (
            s.step_id,
            s.task,
            s.status,
            s.attempts,
            duration(s.started_at, s.finished_at),
            _note(s, waiting.get(s.step_id)),
            flower_link(s),
        )
        for s in shown
    ]
    print()
    print(
        table(["step", "task", "status", "attempts", "took", "error / waits for", "flower"], rows)
    )
    if hidden:
        counts = Counter(str(s.status) for s in hidden)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        print(f"({len(hidden)} for_each items not listed: {summary}; --full lists them)")
    _attempts(shown)
    _waits(waits)
    _tracebacks(steps, args.full)
    children = [c.record() for c in handle.children()]
    if children:
        print("\nchild runs")
        for child in children:
            print(f"  {child.parent_step_id}: {child.id} {child.workflow} {child.status}")
    events = handle.events()
    if events:
        print("\nevents")
        for at, kind, detail in events:
            print(
                f"  {at.astimezone():%Y-%m-%d %H:%M:%S} {kind}" + (f": {detail}" if detail else "")
            )
    print()
    print(to_text(graph_nodes(record, steps), color=color_enabled()))
    return 0


def _run_lines(record: RunRecord, full: bool) -> None:
    print(
        f"run {record.id}  workflow {record.workflow}  {record.status}  "
        f"({duration(record.started_at, record.finished_at)}, trigger {record.trigger})"
    )
    times = [("created", record.created_at), ("started", record.started_at)]
    times.append(("finished", record.finished_at))
    print("  ".join(f"{name} {clock(at)}" for name, at in times if at is not None))
    if record.parent_step_id:
        print(f"child of run {record.parent_run_id}, step {record.parent_step_id}")
    elif record.parent_run_id:
        print(f"retries run {record.parent_run_id}")
    print(f"inputs  {_value(record.inputs, full)}")
    if record.status == "succeeded" or record.output is not None:
        print(f"output  {_value(record.output, full)}")
    if record.error:
        print(f"error at {record.error_step or '-'}: {record.error}")


def _value(value: Any, full: bool) -> str:
    text = json.dumps(value, indent=2 if full else None, default=str)
    if full or len(text) <= SHORT:
        return text
    return shorten(text, SHORT) + f"  ({len(text)} characters; --full shows all)"


def _note(step: StepRecord, waiting: Waiting | None) -> str | None:
    if waiting is not None:
        return shorten(f"{waiting.reason}: {waiting.detail}", 70)
    return shorten(step.error, 60) if step.error else None


def _visible(steps: list[StepRecord], full: bool) -> tuple[list[StepRecord], list[StepRecord]]:
    """The steps to list, and the items left out: without ``--full``, a ``for_each`` step's
    items are listed only when they did not succeed (at most :data:`ITEMS_LISTED`); the mapped
    step's row and the graph give their counts."""
    if full:
        return steps, []
    notable = [s for s in steps if ITEM.fullmatch(s.step_id) and s.status != StepStatus.SUCCEEDED]
    listed = {s.step_id for s in notable[:ITEMS_LISTED]}
    shown = [s for s in steps if not ITEM.fullmatch(s.step_id) or s.step_id in listed]
    hidden = [s for s in steps if ITEM.fullmatch(s.step_id) and s.step_id not in listed]
    return shown, hidden


def _attempts(steps: list[StepRecord]) -> None:
    tried = [(s, a) for s in steps for a in s.attempt_log]
    if not tried:
        return
    print("\nattempts")
    rows = [
        (
            f"{s.step_id} #{a.attempt}",
            a.status,
            clock(a.started_at),
            clock(a.finished_at),
            duration(a.started_at, a.finished_at),
            a.worker,
            shorten(a.error, 80) if a.error else None,
        )
        for s, a in tried
    ]
    lines = table(["attempt", "status", "started", "finished", "took", "worker", "error"], rows)
    print("\n".join(f"  {line}" for line in lines.splitlines()))


def _waits(waits: list[Waiting] | None) -> None:
    if waits is None:
        print("\nwhat the steps wait for is unknown: Redis cannot be reached")
    elif waits:
        print("\nwaiting")
        for w in waits:
            print(f"  {w.step_id}: {w.reason}: {w.detail}")


def _tracebacks(steps: list[StepRecord], full: bool) -> None:
    for step in steps:
        tried = [a for a in step.attempt_log if a.traceback]
        if full:
            shown = tried
        elif step.status == StepStatus.FAILED and tried:
            shown = tried[-1:]
        else:
            continue
        for attempt in shown:
            print(f"\ntraceback of {step.step_id}, attempt {attempt.attempt} ({attempt.status})")
            print(
                "\n".join(f"  {line}" for line in (attempt.traceback or "").rstrip().splitlines())
            )


def _as_json(
    handle: RunHandle, record: RunRecord, steps: list[StepRecord], waits: list[Waiting]
) -> dict[str, Any]:
    waiting = {w.step_id: w for w in waits}
    return {
        "run": as_dict(record),
        "context": handle.context(),
        "steps": [
            {
                **as_dict(s),
                "flower": flower_link(s),
                "waiting_for": waiting[s.step_id].reason if s.step_id in waiting else None,
                "waiting_detail": waiting[s.step_id].detail if s.step_id in waiting else None,
            }
            for s in steps
        ],
        "events": [
            {"at": at, "kind": kind, "detail": detail} for at, kind, detail in handle.events()
        ],
    }


def graph_nodes(record: RunRecord, steps: list[StepRecord]) -> list[GraphNode]:
    """The run's DAG as stored with it, each step with its status."""
    spec_data = default_services().history.load_spec(record.workflow_version) or {"steps": []}
    status = {s.step_id: s.status for s in steps}
    return [
        GraphNode(s["id"], _label(s, steps), tuple(s.get("after") or ()), status.get(s["id"]))
        for s in spec_data["steps"]
    ]


def _label(step: dict[str, Any], steps: list[StepRecord]) -> str:
    """A step's task (or child workflow), with its items' counts when it is a ``for_each``."""
    label = f"workflow {step['workflow']}" if step.get("workflow") else str(step["task"])
    if not step.get("for_each"):
        return label
    items = [s.status for s in steps if s.step_id.startswith(f"{step['id']}[")]
    done = sum(s == StepStatus.SUCCEEDED for s in items)
    failed = sum(s == StepStatus.FAILED for s in items)
    return f"{label} ({done}/{len(items)} items" + (f", {failed} failed)" if failed else ")")
