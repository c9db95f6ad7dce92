"""Submitting a run: validate, write it with its steps, publish its first segments.

A run is written to history (``pending``, one row per step) before anything is published; a
broker that cannot be reached then fails the run, which is never left pending.

The path is one call to Redis, one transaction, the publish and one more call to Redis:

1. ``begin_run`` stores the run's inputs in Redis. It is the first call to Redis, so a Redis
   that is away gives ``ServiceUnavailable`` before anything is written to history.
2. ``create_run`` writes the run and its steps in one transaction. A run published at once (no
   concurrency limit) is recorded as published (``published_at``) in it.
3. The first segments are published.
4. ``confirm_published`` takes the run off the set of runs being published, in which
   ``begin_run`` noted it. A submitter that dies between 1 and 4 leaves the note; the
   reconciler publishes a run noted for over a lease period that history still shows pending
   (``ops.reconciler``). A run whose note was taken off is never published again: history's
   ``published_at`` keeps it out of the reconciler's unpublished runs, and its stall check
   (``stall_timeout``) stays the backstop should Redis lose the note of a run never published.

A run with a concurrency limit may wait in line for a slot: it is recorded unpublished and marked
published in history once its first segments are (``publish_start``), as before, since a slot's
start message and the rebuild of slots read that mark. The plan of a spec is built once per
process and version (``Services.start_plan``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from orchestrator.core import registry
from orchestrator.core.planner import Plan, build_plan
from orchestrator.core.shape_checks import check_children
from orchestrator.core.spec import WorkflowSpec
from orchestrator.core.task_checks import check_inputs, check_tasks
from orchestrator.engine.admission import admit
from orchestrator.engine.canvas import CanvasBuilder, task_id
from orchestrator.engine.concurrency import SLOT, Gate, gate_of
from orchestrator.engine.hooks import PARENT
from orchestrator.engine.priorities import queue_refused
from orchestrator.engine.services import PlanKey, Services
from orchestrator.errors import OrchestratorError, ServiceUnavailable, WorkflowNotFound
from orchestrator.records import NewRun, NewStep
from orchestrator.settings import redact
from orchestrator.status import StepStatus, Trigger

DEADLINE_TASK = "orchestrator.run_deadline"


@dataclass(frozen=True)
class Submission:
    """What a run is started with, besides the workflow."""

    inputs: dict[str, Any]
    trigger: Trigger = Trigger.API
    idempotency_key: str | None = None
    correlation_id: str | None = None
    tenant_id: str | None = None
    priority: int | None = None  # 0..9, for each step without a priority of its own
    parent_run_id: str | None = None
    done: dict[str, Any] | None = None  # step id -> result, for a retried run
    parent_step_id: str | None = None  # the step of parent_run_id that runs this child run
    parent: dict[str, Any] | None = None  # that step's message context, to end it


def resolve(rt: Services, workflow: WorkflowSpec | str | Any) -> WorkflowSpec:
    """A spec from a spec, a ``Workflow`` (anything with ``.spec``) or a registered name."""
    if isinstance(workflow, WorkflowSpec):
        return workflow
    spec = getattr(workflow, "spec", None)
    if isinstance(spec, WorkflowSpec):
        return spec
    rt.load_modules()
    return registry.get(str(workflow))


def submit(rt: Services, spec: WorkflowSpec, sub: Submission) -> str:
    """Validate, write the run and its steps, then publish the first segments; the run's id
    (of the run started before with the same idempotency key, if any)."""
    rt.load_modules()
    check_tasks(spec, rt.catalog)
    check_children(spec, lambda name: _registered(rt, name))
    check_inputs(spec, sub.inputs, rt.catalog)
    gate = gate_of(spec, sub.inputs)  # a key that does not evaluate raises: nothing written
    done = sub.done or {}
    plan = build_plan(spec, frozenset(done)) if done else rt.start_plan(spec)
    publishing = gate is None  # published at once, not after a wait in line
    run_id = str(uuid.uuid4())
    steps = [
        NewStep(
            s.id,
            s.task,
            task_id(run_id, s.id),
            status=StepStatus.SUCCEEDED if s.id in done else StepStatus.PENDING,
            result=done.get(s.id),
            has_result=s.id in done,
        )
        for s in spec.steps
    ]
    record = NewRun(
        id=run_id,
        workflow=spec.name,
        version=spec.version,
        spec=spec.model_dump(mode="json"),
        inputs=sub.inputs,
        trigger=str(sub.trigger),
        idempotency_key=sub.idempotency_key,
        correlation_id=sub.correlation_id,
        tenant_id=sub.tenant_id,
        parent_run_id=sub.parent_run_id,
        done_steps=list(done),
        parent_step_id=sub.parent_step_id,
        priority=sub.priority,
        published=publishing,
    )
    kept = {**done, PARENT: sub.parent} if sub.parent else done
    if gate is not None:
        kept = {**kept, SLOT: gate.name}
    sinks = [s for s in spec.sinks if s in done]
    rt.state.begin_run(run_id, sub.inputs, kept, sinks, publishing=publishing)
    final_id, created = rt.history.create_run(record, steps)
    if not created:
        if publishing:
            rt.state.confirm_published(run_id)  # nothing was written: nothing to publish
        return final_id
    if done:
        rt.remember(PlanKey(spec.version, run_id), spec, plan)
    if sub.parent_step_id:
        rt.history.add_event(
            str(sub.parent_run_id), "child", f"run {run_id} of {spec.name} for {sub.parent_step_id}"
        )
    elif sub.parent_run_id:
        rt.history.add_event(sub.parent_run_id, "retried", f"as run {run_id}")
    if gate is not None and not admit(rt, gate, run_id):
        return run_id  # waits in line (engine.queued starts it), or was cancelled
    builder = CanvasBuilder(
        rt.app, spec, plan, run_id, sub.inputs, resumed=bool(done), priority=sub.priority
    )
    publish_start(rt, builder, plan, gate)
    if spec.deadline:
        schedule_deadline(rt, run_id, spec.deadline)
    return run_id


def _registered(rt: Services, name: str) -> WorkflowSpec | None:
    try:
        return resolve(rt, name)
    except WorkflowNotFound:
        return None


def schedule_deadline(rt: Services, run_id: str, seconds: float) -> None:
    """Publish the deadline check of a run (``orchestrator.ops.deadlines``), durably when it is
    far off."""
    sig = rt.app.signature(DEADLINE_TASK, args=(run_id, seconds))
    if seconds < rt.longest_broker_delay:
        sig.apply_async(countdown=seconds)
    else:
        rt.delays.add(dict(sig), time.time() + seconds)


def publish_start(
    rt: Services, builder: CanvasBuilder, plan: Plan, gate: Gate | None = None
) -> None:
    """Publish the segments a run starts with, then note that it was published: a run
    without a concurrency limit (``gate``) was recorded published by ``submit``, and is taken
    off the runs being published in Redis; one with a limit is marked published in history.

    A broker that cannot be reached fails the run (it is never left pending), frees its
    concurrency slot and raises.
    """
    try:
        for segment in plan.start:
            builder.publish(segment)
    except Exception as exc:  # connection refused, timed out, hung: never leave it pending
        refused = queue_refused(exc)  # RabbitMQ: a queue declared before without priorities
        error = refused or (
            f"not published: the broker at {redact(rt.settings.broker_url)} is unreachable"
        )
        rt.history.fail_run(builder.run_id, error)
        if gate is not None:
            # a run this gives the slot to is started by the reconciler, with the broker back
            rt.slots.release(gate.name, builder.run_id)
        if refused:
            raise OrchestratorError(
                f"run {builder.run_id} was recorded and marked failed: {refused}"
            ) from exc
        raise ServiceUnavailable(
            "the Celery broker",
            redact(rt.settings.broker_url),
            str(exc),
            f"Run {builder.run_id} was recorded and marked failed; start the broker (or set "
            "ORCHESTRATOR_BROKER_URL) and submit again",
        ) from exc
    if gate is None:
        rt.state.confirm_published(builder.run_id)
    else:
        rt.history.mark_published(builder.run_id)
