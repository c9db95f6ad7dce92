"""What each step of an unfinished run waits for: ``waiting_for`` (design section 4).

A step that has not started although every step it runs after has ended waits for one of:

* ``paused``: its run is paused;
* ``retry_delay``: its next attempt is due later (the time it is due, and the last error);
* ``breaker``: its task's circuit breaker is open (until when);
* ``queue``: its message is in its queue, for a worker: with the live workers known
  (``orchestrator.ops.workers``), the detail says when none will take it and why (none runs,
  none consumes the queue, or those that do lack the task), naming the task and the queue.

The CLI shows it in ``orchestrator show`` and ``orchestrator run --wait``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import redis

from orchestrator.core.spec import StepSpec, WorkflowSpec
from orchestrator.engine.services import Services
from orchestrator.errors import ServiceUnavailable
from orchestrator.ops.workers import cannot_run, step_queue
from orchestrator.records import RunRecord, StepRecord
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.redis.workers import WorkerInfo, WorkerRegistry


@dataclass(frozen=True)
class Waiting:
    """Why a step has not started: ``reason`` (paused, retry_delay, breaker, queue) and a
    detail a person reads; ``stuck`` when no live worker would take it as things are."""

    step_id: str
    reason: str
    detail: str
    stuck: bool = False


def waiting_for(
    rt: Services,
    record: RunRecord,
    steps: list[StepRecord],
    workers: list[WorkerInfo] | None,
) -> list[Waiting]:
    """The steps of ``record`` that wait, and for what (``workers``: the live workers, or None
    when they cannot be asked)."""
    if record.status.terminal:
        return []
    data = rt.history.load_spec(record.workflow_version)
    if data is None:
        return []
    spec = WorkflowSpec.model_validate(data)
    status = {s.step_id: s.status for s in steps}
    planned_steps = {s.id: s for s in spec.steps}
    found = []
    for step in steps:
        planned = planned_steps.get(step.step_id)
        if planned is None or step.status not in (StepStatus.PENDING, StepStatus.RETRYING):
            continue
        if not all(status.get(parent, StepStatus.PENDING).terminal for parent in planned.after):
            continue  # waits for the steps it runs after
        found.append(_waiting(rt, record, step, planned, workers))
    return found


def waiting_now(
    rt: Services, record: RunRecord, steps: list[StepRecord], workers: WorkerRegistry
) -> list[Waiting] | None:
    """:func:`waiting_for` with the live workers of ``workers``; None when Redis cannot be
    asked (the run's history can be read all the same)."""
    if record.status.terminal:
        return []
    try:
        return waiting_for(rt, record, steps, workers.live())
    except (redis.RedisError, ServiceUnavailable, OSError):
        return None


def _waiting(
    rt: Services,
    record: RunRecord,
    step: StepRecord,
    planned: StepSpec,
    workers: list[WorkerInfo] | None,
) -> Waiting:
    if record.status == RunStatus.PAUSED:
        return Waiting(
            step.step_id, "paused", f"the run is paused; orchestrator resume {record.id}"
        )
    if step.status == StepStatus.RETRYING:
        noted = rt.state.expected_retry(record.id, step.step_id, step.attempts + 1)
        due = float(noted["due"]) if noted else 0.0
        if due > time.time():
            after = f" after {_first_line(step.error)}" if step.error else ""
            detail = f"attempt {step.attempts + 1} at {_clock(due)}{after}"
            return Waiting(step.step_id, "retry_delay", detail)
    breaker = getattr(rt.app.tasks.get(planned.task), "breaker", None)
    if breaker is not None:
        state = rt.breakers.get(breaker.name)
        if state.state == "open":
            until = _clock(state.opened_at + breaker.reset_timeout)
            return Waiting(step.step_id, "breaker", f"breaker {breaker.name!r} open until {until}")
    queue = step_queue(rt.app, planned)
    where = f"task {planned.task!r} on queue {queue!r}"
    why = None if workers is None else cannot_run(planned.task, queue, workers)
    if why is None:
        return Waiting(step.step_id, "queue", f"{where}, for a worker")
    return Waiting(step.step_id, "queue", f"{where}: {why}", stuck=True)


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 80 else line[:79] + "…"
