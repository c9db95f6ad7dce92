"""Child workflows: a step (or each item of a ``for_each``) that runs another workflow.

The step's message starts the child run (its idempotency key names the parent run and step, so
a redelivery finds the run it started) and returns: no worker slot is held while the child runs.
The child keeps its parent step's message context beside its results (``hooks.PARENT``); when the
child ends, its end announcement publishes that message again with the child's id, and that
delivery ends the step: with the child's output as its result, or failed when the child did not
succeed. Meanwhile the step's lease is held in the child's name, so the reconciler does not take
the waiting step for a lost one; a parent recovered anyway starts nothing new (the same key) and
ends the step at once if the child had ended.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from orchestrator.codec import encode
from orchestrator.engine.failure import NotRetryable
from orchestrator.engine.fanout import item_succeeded
from orchestrator.engine.finish import succeeded
from orchestrator.engine.hooks import end_parent_step
from orchestrator.engine.submit import Submission, resolve, submit
from orchestrator.errors import ValidationError, WorkflowNotFound
from orchestrator.ports import RunHistory
from orchestrator.records import RunRecord
from orchestrator.status import RunStatus, StepStatus, Trigger

if TYPE_CHECKING:
    from orchestrator.engine.step import Step

log = logging.getLogger("orchestrator.children")


class ChildFailed(NotRetryable):
    """The child run did not succeed, or cannot be started with what the step received."""


def waiting_owner(child_id: str) -> str:
    """The lease holder of a step whose child run is going."""
    return f"child:{child_id}"


def ended_child(history: RunHistory, run_id: str, step_id: str) -> RunRecord | None:
    """The child run that ``step_id`` of ``run_id`` started, once it has ended (else None).

    A step whose run ended while it waited (cancelled, or failed at another step) is not ended
    by its child's end: that delivery stands down, and the step keeps its child's lease for
    days; the reconciler ends it (``ops.reconciler``)."""
    return next(
        (c for c in history.children(run_id) if c.parent_step_id == step_id and c.status.terminal),
        None,
    )


def run_child(step: Step, args: tuple[Any, ...]) -> None:
    """Start the step's child run, or (the child's end delivered) end the step."""
    step.rt.leases.drop(step.lease_key)
    if "child" in step.ctx:
        _end(step, str(step.ctx["child"]))
    else:
        _start(step, args[0] if args else step.rt.state.inputs(step.run_id))


def _start(step: Step, inputs: Any) -> None:
    rt, name = step.rt, str(step.spec_step.workflow)
    if not isinstance(inputs, dict):
        raise ChildFailed(
            f"workflow {step.spec.name!r}, step {step.step_id!r}: the inputs of child workflow "
            f"{name!r} must be a dict, not a value of type {type(inputs).__name__}"
        )
    try:
        child = resolve(rt, name)
    except WorkflowNotFound as exc:  # known where the run was submitted, not in this worker
        raise ChildFailed(
            f"workflow {step.spec.name!r}, step {step.step_id!r}: this worker cannot start "
            f"child workflow {name!r}: {exc} (workers know the Python workflows of the modules "
            "in their ORCHESTRATOR_TASK_MODULES); then `orchestrator retry` the run"
        ) from exc
    step.record(StepStatus.RUNNING)
    record = rt.history.get_run(step.run_id)
    queue = {"queue": step.spec_step.queue} if step.spec_step.queue else {}
    try:
        child_id = submit(
            rt,
            child,
            Submission(
                inputs=inputs,
                trigger=Trigger.CHILD,
                idempotency_key=f"child-of:{step.run_id}:{step.step_id}",
                correlation_id=record.correlation_id if record else None,
                tenant_id=record.tenant_id if record else None,
                priority=record.priority if record else None,
                parent_run_id=step.run_id,
                parent_step_id=step.step_id,
                parent={**step.ctx, "attempt": step.attempt, **queue},
            ),
        )
    except ValidationError as exc:  # e.g. inputs the child's first steps cannot take
        raise ChildFailed(
            f"workflow {step.spec.name!r}, step {step.step_id!r}: child workflow {name!r} "
            f"cannot start: {exc}"
        ) from exc
    rt.state.release(step.run_id, step.step_id, step.attempt, step.owner)
    lease_ms = int(rt.settings.result_expires * 1000)
    rt.state.renew({step.lease_key: waiting_owner(child_id)}, lease_ms)
    ended = rt.history.get_run(child_id)
    if ended is not None and ended.status.terminal:  # found again after it ended
        end_parent_step(rt.app, {**step.ctx, "attempt": step.attempt, **queue}, child_id)


def _end(step: Step, child_id: str) -> None:
    record = step.rt.history.get_run(child_id)
    if record is None or record.status != RunStatus.SUCCEEDED:
        status = "lost" if record is None else record.status
        detail = f": {record.error}" if record is not None and record.error else ""
        raise ChildFailed(
            f"workflow {step.spec.name!r}, step {step.step_id!r}: child run {child_id} of "
            f"{step.spec_step.workflow!r} {status}{detail}"
        )
    encoded = encode(record.output)
    if step.item is not None:
        item_succeeded(step, encoded)
    else:
        succeeded(step, record.output, encoded)
