"""Workers: each says what it consumes and runs; ``orchestrator workers`` lists them, the CLI
asks them before it submits.

A thread of each worker's main process (:class:`Heartbeat`) writes the worker's entry to the
registry of workers (the ``WorkerStore`` port; Redis in production) every
``records.HEARTBEAT_EVERY`` seconds (5): its node name, pid, the queues it consumes, the tasks it
registered, its concurrency and the steps its pool runs now (run id, step id). The bounds:

* a worker silent for longer than ``records.LOST_AFTER`` (15 s: 3 missed heartbeats) is listed
  ``lost``: it died (SIGKILL, OOM, power), hangs, or cannot reach Redis;
* a worker silent for longer than ``records.DROPPED_AFTER`` (10 minutes) is no longer listed;
* one that stops (warm shutdown) removes its entry at once.

A lost worker's steps are the reconciler's (:mod:`orchestrator.ops.reconciler`): their leases
lapse (``ORCHESTRATOR_LEASE_SECONDS``) and another worker's reconciler recovers their runs.
With the live workers, :func:`cannot_run` tells why none would run a task from a queue, and
:func:`submit_check` applies it to every step of a workflow before ``orchestrator run``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.worker import state as worker_state  # imported before any thread: fork safety

from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.canvas import CTX_KEY, record_id
from orchestrator.engine.services import Services
from orchestrator.engine.wait_reasons import START_WORKER, cannot_run, step_queue
from orchestrator.ports import WorkerStore
from orchestrator.records import DROPPED_AFTER, HEARTBEAT_EVERY, LOST_AFTER, WorkerInfo

log = logging.getLogger("orchestrator")
__all__ = [
    "DROPPED_AFTER",
    "HEARTBEAT_EVERY",
    "LOST_AFTER",
    "START_WORKER",
    "Heartbeat",
    "cannot_run",
    "describe",
    "list_workers",
    "live_workers",
    "step_queue",
    "submit_check",
]


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
        running=running_steps(),
    )


def running_steps() -> tuple[tuple[str, str], ...]:
    """The steps this worker's pool executes now: (run id, step id), from Celery's own record
    of the requests it handed to the pool (``celery.worker.state.active_requests``)."""
    for _ in range(3):  # the consumer's thread may change the set while it is read
        try:
            requests = list(worker_state.active_requests)
            break
        except RuntimeError:
            continue
    else:
        return ()
    found = set()
    for request in requests:
        try:
            ctx = (request.kwargs or {}).get(CTX_KEY)
        except Exception:  # a message that cannot be decoded is no step of ours
            continue
        if isinstance(ctx, dict) and "run_id" in ctx and "step_id" in ctx:
            found.add((str(ctx["run_id"]), record_id(ctx)))
    return tuple(sorted(found))


class Heartbeat:
    """Keeps this worker's entry in the registry while the worker runs."""

    def __init__(
        self,
        registry: WorkerStore,
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
            self.registry.publish(info, DROPPED_AFTER)
        except Exception as exc:  # Redis away: the entry ages, the next beat writes it again
            log.warning("worker heartbeat not written: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self.name is not None:
            try:
                self.registry.remove(self.name)
            except Exception as exc:  # Redis away: the entry is listed lost, then dropped
                log.warning("worker entry not removed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()


def list_workers(rt: Services) -> list[WorkerInfo]:
    """Every worker heard from in the last ``DROPPED_AFTER`` seconds, live or lost, by name."""
    return rt.workers.workers(LOST_AFTER)


def live_workers(rt: Services) -> list[WorkerInfo]:
    """The workers that are not lost."""
    return [w for w in list_workers(rt) if not w.lost]


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
