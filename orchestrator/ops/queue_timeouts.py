"""Queue timeouts, the reconciler's half: a step whose message was not received within its
``queue_timeout`` fails for good with ``QueueTimeout``, and its run fails like any failed step.

The engine notes each message of a step under a queue timeout when it is published and forgets
it when a worker receives it (:mod:`orchestrator.engine.queue_timeouts`). Each reconciler pass
(every ``ORCHESTRATOR_RECONCILE_INTERVAL`` seconds) takes the notes that are due, so a step
fails within ``queue_timeout + reconcile_interval`` of becoming ready even when no worker
consumes its queue at all (the worker that would time it out never receives it).

What counts as queued: from when the message can be taken (its publish, or its ETA) to when a
worker receives it. A retry delay, a deferral by a breaker or a rate limit, or a pause does not
count: a worker received the message, and its next publication starts the clock again.

Failing is race-free with a worker that receives the message at that moment: the reconciler
claims the step's attempt first, as a worker would (one Redis script); if a worker holds it,
ran it, or the run stopped, nothing is failed. A paused run's step is noted again.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.failure import fail_run
from orchestrator.engine.queue_timeouts import parse_member
from orchestrator.engine.services import Services
from orchestrator.errors import QueueTimeout
from orchestrator.ops.workers import cannot_run, live_workers, step_queue
from orchestrator.records import StepEvent
from orchestrator.status import RunStatus, StepStatus

log = logging.getLogger("orchestrator.queue_timeouts")
OWNER = "queue-timeout"
"""The claim owner prefix of the reconciler when it fails a step that was never received."""


def expire_queued(rt: Services, now: float | None = None, limit: int = 100) -> int:
    """Fail the steps whose queue timeout is due (taken by this caller only); how many."""
    now = time.time() if now is None else now
    failed = 0
    for entry, due in rt.queue_timeouts.due(now, limit):
        if not rt.queue_timeouts.take(entry):
            continue
        try:
            failed += _expire(rt, entry, due, now)
        except Exception:  # PostgreSQL away, a spec this version cannot read: the next pass
            rt.queue_timeouts.expect(entry, due)
            log.exception("queue timeout of %s not handled; the next pass tries again", entry)
    return failed


def _expire(rt: Services, entry: str, due: float, now: float) -> bool:
    run_id, step_id, attempt = parse_member(entry)
    record = rt.history.get_run(run_id)
    data = rt.history.load_spec(record.workflow_version) if record else None
    if record is None or data is None or RunStatus(record.status).terminal:
        return False
    spec = WorkflowSpec.model_validate(data)
    planned = spec.step(step_id.split("[", 1)[0])
    timeout = float(planned.queue_timeout or 0)
    owner = f"{OWNER}:{uuid.uuid4().hex[:8]}"
    lease_ms = int(rt.settings.lease_seconds * 1000)
    claim = rt.state.claim(run_id, step_id, attempt, owner, lease_ms, [])
    if claim.outcome == "flag" and claim.flag == RunStatus.PAUSED:
        rt.queue_timeouts.expect(entry, now + timeout)  # its clock runs again after resume
        return False
    if claim.outcome != "go":
        return False  # a worker holds it or ran it, or the run stopped
    queue = step_queue(rt.app, planned)
    error = QueueTimeout(
        spec.name, step_id, queue, now - (due - timeout), timeout, _why(rt, planned.task, queue)
    )
    text = f"{type(error).__name__}: {error}"
    rt.writer.submit(
        StepEvent(run_id, step_id, attempt, StepStatus.FAILED, datetime.now(UTC), error=text)
    )
    fail_run(rt, run_id, step_id, text)
    rt.state.release(run_id, step_id, attempt, owner)
    rt.history.add_event(run_id, "queue_timeout", str(error))
    log.warning("run %s failed: %s", run_id, error)
    return True


def _why(rt: Services, task: str, queue: str) -> str:
    """Why no worker took the step: none consumes the queue, or they lack the task, or (with
    workers that would take it) the queue's backlog."""
    try:
        reason = cannot_run(task, queue, live_workers(rt))
    except Exception as exc:  # the registry of workers is unreadable: say what is known
        log.warning("queue timeout: live workers unknown: %s", exc)
        return "no worker took it in time"
    return reason or "the workers that consume the queue did not reach it in time (a backlog)"
