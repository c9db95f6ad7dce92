"""The built-in answers to "what does this step wait for" (:mod:`orchestrator.engine.waiting`).

* ``paused``: its run is paused (a step not yet started waits to be resumed);
* ``child_run``: it runs a child workflow whose run has not ended (the detail names the child);
* ``retry_delay``: its next attempt is due later (when, and the last error);
* ``breaker``: its task's circuit breaker is open (until when);
* ``queue``: its message is in its queue, for a worker: with the live workers known, the detail
  says when none will take it and why (none runs, none consumes the queue, or those that do lack
  the task), naming the task and the queue.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from orchestrator.core.spec import StepSpec
from orchestrator.engine.waiting import (
    ORDER_BREAKER,
    ORDER_CHILD_RUN,
    ORDER_PAUSED,
    ORDER_QUEUE,
    ORDER_RETRY_DELAY,
    Waiting,
    WaitQuery,
    add_probe,
)
from orchestrator.records import WorkerInfo
from orchestrator.status import RunStatus, StepStatus

START_WORKER = "celery -A orchestrator.worker worker"


def paused(q: WaitQuery) -> Waiting | None:
    if q.record.status != RunStatus.PAUSED or not q.ready:
        return None
    return Waiting(
        q.step.step_id, "paused", f"the run is paused; orchestrator resume {q.record.id}"
    )


def child_run(q: WaitQuery) -> Waiting | None:
    if q.planned.workflow is None or q.step.status != StepStatus.RUNNING:
        return None
    child = q.child_runs().get(q.step.step_id)
    if child is None or child.status.terminal:
        return None  # not started yet, or its end is on its way to the step
    return Waiting(
        q.step.step_id,
        "child_run",
        f"child run {child.id} of workflow {child.workflow!r} is {child.status}",
    )


def retry_delay(q: WaitQuery) -> Waiting | None:
    if q.step.status != StepStatus.RETRYING or not q.ready:
        return None
    attempt = q.step.attempts + 1
    noted = q.rt.state.expected_retry(q.record.id, q.step.step_id, attempt)
    due = float(noted["due"]) if noted else 0.0
    if due <= time.time():
        return None  # due: its message is on its way to a worker (the queue says so)
    after = f" after {first_line(q.step.error)}" if q.step.error else ""
    return Waiting(q.step.step_id, "retry_delay", f"attempt {attempt} at {clock(due)}{after}")


def breaker(q: WaitQuery) -> Waiting | None:
    if not q.ready:
        return None
    config = getattr(q.rt.app.tasks.get(q.planned.task), "breaker", None)
    if config is None:
        return None
    state = q.rt.breakers.get(config.name)
    if state.state != "open":
        return None
    until = clock(state.opened_at + config.reset_timeout)
    return Waiting(q.step.step_id, "breaker", f"breaker {config.name!r} open until {until}")


def queue(q: WaitQuery) -> Waiting | None:
    if not q.ready:
        return None
    name = step_queue(q.rt.app, q.planned)
    where = f"task {q.planned.task!r} on queue {name!r}"
    workers = q.workers()
    why = None if workers is None else cannot_run(q.planned.task, name, workers)
    if why is None:
        return Waiting(q.step.step_id, "queue", f"{where}, for a worker")
    return Waiting(q.step.step_id, "queue", f"{where}: {why}", stuck=True)


def cannot_run(task: str, queue: str, workers: list[WorkerInfo]) -> str | None:
    """Why no live worker would run ``task`` from ``queue``; None when one would."""
    if not workers:
        return f"no worker is running; start one ({START_WORKER})"
    consumers = [w for w in workers if w.consumes(queue)]
    if not consumers:
        return f"no live worker consumes this queue; start one with -Q {queue}"
    if not any(w.has(task) for w in consumers):
        names = ", ".join(w.name for w in consumers)
        return (
            f"no live worker on this queue has registered the task (workers: {names}); add its "
            "module to their ORCHESTRATOR_TASK_MODULES and restart them"
        )
    return None


def step_queue(app: Any, step: StepSpec) -> str:
    """The queue a step's messages go to: the step's, else its task's, else the default."""
    task = app.tasks.get(step.task)
    named = step.queue or step.options.get("queue") or getattr(task, "queue", None)
    return str(named or app.conf.task_default_queue)


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S")


def first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 80 else line[:79] + "…"


add_probe("paused", paused, ORDER_PAUSED)
add_probe("child_run", child_run, ORDER_CHILD_RUN)
add_probe("retry_delay", retry_delay, ORDER_RETRY_DELAY)
add_probe("breaker", breaker, ORDER_BREAKER)
add_probe("queue", queue, ORDER_QUEUE)
