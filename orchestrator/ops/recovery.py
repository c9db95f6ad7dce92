"""Recovering one run in place: what the reconciler does to a run it found stuck.

The steps that succeeded keep their results (from PostgreSQL, and from Redis for those whose
history died with their process), and the rest of the DAG is planned again under a new *epoch*
and published. A run that Redis says failed or was cancelled, but whose end never reached
PostgreSQL, is ended instead; a run with a step still running elsewhere (a live lease), or
recovered moments ago, is left alone.

A ``for_each`` step that fanned out holds no lease while its items run (each item holds its
own): its items that did not end are published again at their current attempt
(:func:`republish_items`: lost with a worker mid-item, reserved by it, or never published
because the batch message publishing them died), and the reconciler takes the step for a lost
one only once its fan-out made no progress for a lease period with nothing queued
(:func:`fan_out_busy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core.planner import build_plan
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.canvas import CTX_KEY, CanvasBuilder, item_id
from orchestrator.engine.conditions import SKIPPED
from orchestrator.engine.hooks import on_run_ended
from orchestrator.engine.services import PlanKey, Services
from orchestrator.records import StepEvent, StepRecord
from orchestrator.status import RunStatus, StepStatus

log = logging.getLogger("orchestrator.recovery")
UNENDED = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.RETRYING)
DONE = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


def recover_run(rt: Services, run_id: str, reason: str) -> int | None:
    """Re-plan and publish what is left of a run; returns the new epoch, or None."""
    record = rt.history.get_run(run_id)
    if record is None or record.status not in (RunStatus.PENDING, RunStatus.RUNNING):
        return None
    if end_if_ended(rt, run_id):
        return None
    steps = rt.history.get_steps(run_id)
    if any(
        rt.state.lease_alive(run_id, s.step_id, max(1, s.attempts))
        for s in steps
        if s.status == StepStatus.RUNNING
    ):
        return None  # a step still runs elsewhere: its end moves the run on, or we come back
    if not rt.state.hold(run_id, "recovering", recovery_grace(rt)):
        return None  # recovered moments ago: give what it published time to be claimed
    data = rt.history.load_spec(record.workflow_version)
    if data is None:
        return None
    spec = WorkflowSpec.model_validate(data)
    done = {s.step_id: s.result for s in steps if s.status == StepStatus.SUCCEEDED}
    done.update({s.step_id: SKIPPED for s in steps if s.status == StepStatus.SKIPPED})
    done.update(record_unrecorded(rt, run_id, steps))
    if len(done) == len(steps):
        return None  # every step is done: the next pass finishes the run
    attempts = current_attempts(rt, run_id, steps)
    epoch = rt.history.add_recovery(run_id, list(done))
    plan = build_plan(spec, frozenset(done))
    rt.remember(PlanKey(spec.version, run_id, epoch), spec, plan)
    rt.state.init_run(run_id, record.inputs, done, [s for s in spec.sinks if s in done])
    builder = CanvasBuilder(
        rt.app,
        spec,
        plan,
        run_id,
        record.inputs,
        epoch=epoch,
        attempts=attempts,
        priority=record.priority,
    )
    for segment in plan.start:  # a broker error raises: the next pass tries again
        builder.publish(segment)
    republish_items(rt, builder, spec, steps, attempts)
    rt.history.mark_published(run_id)
    rt.history.add_event(run_id, "recovered", f"epoch {epoch}: {reason}")
    log.warning("run %s recovered (epoch %d): %s", run_id, epoch, reason)
    return epoch


def end_if_ended(rt: Services, run_id: str) -> bool:
    """End in history a run that Redis says failed or was cancelled; True if it had ended."""
    ended = rt.state.failure(run_id)
    if ended is None:
        return False
    flag, step, error = ended
    if flag == RunStatus.SUCCEEDED:
        return True  # set once history recorded the end: the settled-runs check finishes it
    if flag == RunStatus.CANCELLED:
        changed = rt.history.cancel_run(run_id, error or "cancelled")
    else:
        changed = rt.history.end_failed(run_id, step, error or f"run {flag}")
    if changed:
        log.warning("run %s ended as %s by the reconciler (its end was not recorded)", run_id, flag)
        cancelled = flag == RunStatus.CANCELLED
        status = RunStatus.CANCELLED if cancelled else RunStatus.FAILED
        rt.state.notify_done(run_id, status)
        on_run_ended(rt, run_id, status)
    return True


def ended_unrecorded(rt: Services, run_id: str, steps: list[StepRecord]) -> dict[str, Any]:
    """The results in Redis of the steps history does not show done (succeeded or skipped):
    their process was killed after the result and before its history was written."""
    unended = [s.step_id for s in steps if s.status not in DONE]
    return rt.state.stored(run_id, unended) if unended else {}


def record_unrecorded(rt: Services, run_id: str, steps: list[StepRecord]) -> dict[str, Any]:
    """Steps that succeeded in Redis but whose history died with their process: record them."""
    found = ended_unrecorded(rt, run_id, steps)
    now = datetime.now(UTC)
    for step in steps:
        if step.step_id in found:
            rt.writer.submit(
                StepEvent(
                    run_id,
                    step.step_id,
                    max(1, step.attempts),
                    StepStatus.SUCCEEDED,
                    now,
                    result=found[step.step_id],
                )
            )
    if found:
        rt.writer.flush(timeout=10)
    return found


def current_attempts(rt: Services, run_id: str, steps: list[StepRecord]) -> dict[str, int]:
    """The attempt to publish of each step that started: history's, or Redis's when a retry
    was noted there but its history died with its process (a message of an earlier attempt is
    stale: it would be ignored, and the run never end)."""
    attempts = {
        s.step_id: max(1, s.attempts) + (s.status == StepStatus.RETRYING)
        for s in steps
        if s.status in (StepStatus.RUNNING, StepStatus.RETRYING)
    }
    for step_id, attempt in rt.state.current_attempts(run_id).items():
        attempts[step_id] = max(attempts.get(step_id, 1), attempt)
    return attempts


def recovery_grace(rt: Services) -> float:
    """How long after a recovery a run is left alone (its messages still being claimed)."""
    return 2 * rt.settings.lease_seconds + 2 * rt.settings.reconcile_interval


def _items(steps: list[StepRecord], step_id: str) -> list[StepRecord]:
    """The item rows of a ``for_each`` step that fanned out (none if it did not)."""
    return [s for s in steps if s.step_id.startswith(f"{step_id}[") and s.step_id.endswith("]")]


def republish_items(
    rt: Services,
    builder: CanvasBuilder,
    spec: WorkflowSpec,
    steps: list[StepRecord],
    attempts: dict[str, int],
) -> int:
    """Publish again the items of fanned-out ``for_each`` steps that neither ended nor run
    elsewhere (a live lease), at their current attempt (``attempts``); a copy of one that is
    still queued finds it done (its claim)."""
    run_id, published = builder.run_id, 0
    by_id = {s.step_id: s for s in steps}
    for step in spec.steps:
        row = by_id.get(step.id)
        items = _items(steps, step.id) if step.for_each and row else []
        if row is None or row.status != StepStatus.RUNNING or not items:
            continue
        for index in range(len(items)):
            name = item_id(step.id, index)
            item, attempt = by_id.get(name), attempts.get(name, 1)
            if item is not None and item.status not in UNENDED:
                continue
            if rt.state.lease_alive(run_id, name, attempt):
                continue
            if rt.state.expected_retry(run_id, name, attempt) is not None:
                continue  # its next attempt is on its way; if lost, the reconciler sends it
            signature = builder.item(step.id, index, len(items))
            if attempt > 1:
                signature.kwargs[CTX_KEY]["attempt"] = attempt
            signature.apply_async()
            published += 1
    if published:
        log.warning("run %s: %d for_each items published again", run_id, published)
    return published


def fan_out_busy(rt: Services, run_id: str, step_id: str, queued: Callable[[str], bool]) -> bool:
    """Whether ``step_id`` is a ``for_each`` step whose fan-out goes on: an item of it started
    or ended within a lease period, or the run's queues hold messages. Such a step holds no
    lease of its own, and is not lost."""
    steps = rt.history.get_steps(run_id)
    items = _items(steps, step_id)
    if not items:
        return False
    recent = datetime.now(UTC) - timedelta(seconds=rt.settings.lease_seconds)
    moments = [t for s in items for t in (s.started_at, s.finished_at) if t is not None]
    aware = [t if t.tzinfo else t.replace(tzinfo=UTC) for t in moments]
    return any(t >= recent for t in aware) or queued(run_id)
