"""Live workers: each worker says what it consumes and runs; the CLI asks before it submits.

A thread of each worker's main process (:class:`Heartbeat`) writes the worker's entry to the
registry in Redis (``orchestrator.stores.redis.workers``) every ``HEARTBEAT_EVERY`` seconds:
its node name, the queues it consumes, the tasks it registered, its concurrency. The entry
expires ``ENTRY_TTL`` seconds after the last write, so a worker that died drops out by itself;
one that stops removes it. With the registry, :func:`cannot_run` tells why no live worker
would run a task from a queue (none runs, none consumes the queue, or those that do lack the
task: their ``ORCHESTRATOR_TASK_MODULES`` misses its module), and :func:`submit_check` applies
it to every step of a workflow before ``orchestrator run`` submits it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.core.spec import StepSpec, WorkflowSpec
from orchestrator.stores.redis.workers import WorkerInfo, WorkerRegistry

log = logging.getLogger("orchestrator")
HEARTBEAT_EVERY = 5.0
ENTRY_TTL = 3 * HEARTBEAT_EVERY
START_WORKER = "celery -A orchestrator.worker worker"


def describe(consumer: Any, started_at: float) -> WorkerInfo:
    """This worker as its Celery consumer sees it now (queues can change: ``add_consumer``)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        queues = [q.name for q in task_consumer.queues]
    else:
        queues = list(consumer.app.amqp.queues.consume_from or ())
    controller = getattr(consumer, "controller", None)
    return WorkerInfo(
        name=str(consumer.hostname),
        queues=tuple(sorted(queues)),
        tasks=tuple(sorted(n for n in consumer.app.tasks if not n.startswith("celery."))),
        concurrency=getattr(controller, "concurrency", None),
        pid=os.getpid(),
        started_at=started_at,
        seen_at=time.time(),
    )


class Heartbeat:
    """Keeps this worker's entry in the registry while the worker runs."""

    def __init__(
        self,
        registry: WorkerRegistry,
        info: Callable[[], WorkerInfo],
        every: float = HEARTBEAT_EVERY,
    ) -> None:
        self.registry = registry
        self.info = info
        self.every = every
        self.name: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="orchestrator-heartbeat", daemon=True
        )

    def start(self) -> None:
        """Write the entry now (in the calling thread), then renew it from a thread."""
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        try:
            info = self.info()
            self.name = info.name
            self.registry.publish(info, ENTRY_TTL)
        except Exception as exc:  # Redis away: the entry lapses, the next beat writes it again
            log.warning("worker heartbeat not written: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.name is not None:
            try:
                self.registry.remove(self.name)
            except Exception as exc:  # Redis away: the entry expires by itself
                log.warning("worker entry not removed (it expires in %.0fs): %s", ENTRY_TTL, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()


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


def submit_check(
    app: Any, spec: WorkflowSpec, workers: list[WorkerInfo]
) -> tuple[list[str], list[str]]:
    """Before a run of ``spec`` is submitted: the steps live workers would fail for sure (a
    worker consumes the step's queue but none of those has its task: the message would be
    dead-lettered), and notes on the steps that would wait (no live worker consumes their
    queue yet, or some of its consumers lack the task)."""
    refused: list[str] = []
    notes: list[str] = []
    if not workers:
        return refused, [
            f"no live worker is registered: the run waits until one starts ({START_WORKER})"
        ]
    for step in spec.steps:
        queue = step_queue(app, step)
        consumers = [w for w in workers if w.consumes(queue)]
        lacking = [w.name for w in consumers if not w.has(step.task)]
        why = cannot_run(step.task, queue, workers)
        where = f"workflow {spec.name!r}, step {step.id!r}: task {step.task!r} on queue {queue!r}: "
        if consumers and why is not None:
            refused.append(where + why)
        elif why is not None:
            notes.append(where + why + " (the step waits until one does)")
        elif lacking:
            notes.append(
                where + f"workers {', '.join(lacking)} consume the queue without the task; a "
                "message one of them takes fails"
            )
    return refused, notes
