"""Starting a run that waited in line for a concurrency slot (``orchestrator.start_queued``).

The run that frees a slot publishes this task for each run that got one
(``engine.concurrency.release``); a worker then publishes the run's first segments, as
submit would have. A run that ended while it waited (cancelled) gives its slot back at once;
a run already started (a duplicate message) is left alone.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine import concurrency_wait  # noqa: F401  (its waiting_for registers)
from orchestrator.engine.canvas import CanvasBuilder
from orchestrator.engine.concurrency import SLOT, START_TASK, gate_of, release
from orchestrator.engine.services import PlanKey, Services, services_of
from orchestrator.engine.submit import publish_start, schedule_deadline
from orchestrator.records import RunRecord
from orchestrator.status import StepStatus


@shared_task(name=START_TASK, bind=True, ignore_result=True)
def start_queued_task(self: Any, run_id: str) -> bool:
    """Start a run that got a concurrency slot."""
    return start_queued(services_of(self.app), run_id)


def start_queued(rt: Services, run_id: str) -> bool:
    """Publish the start of a run that waited for a slot; True when this call started it."""
    record = rt.history.get_run(run_id)
    if record is None or record.published_at is not None:
        return False
    key = PlanKey(record.workflow_version, run_id if record.done_steps else None)
    spec, plan = rt.plan(key)
    gate = gate_of(spec, record.inputs)
    if record.status.terminal:
        if gate is not None:
            release(rt, gate.name, run_id)  # got a slot after it ended: the next one gets it
        return False
    _refresh_state(rt, record, spec, gate.name if gate else None)
    builder = CanvasBuilder(
        rt.app,
        spec,
        plan,
        run_id,
        record.inputs,
        resumed=bool(record.done_steps),
        priority=record.priority,
    )
    publish_start(rt, builder, plan, gate)
    rt.history.add_event(run_id, "started", "a concurrency slot freed")
    if spec.deadline:
        schedule_deadline(rt, run_id, spec.deadline)
    return True


def _refresh_state(rt: Services, record: RunRecord, spec: WorkflowSpec, slot: str | None) -> None:
    """Write the run's inputs (and a retried run's carried results) to Redis again: a run may
    wait in line longer than its state there is kept."""
    kept: dict[str, Any] = {SLOT: slot} if slot else {}
    if record.done_steps:
        done = set(record.done_steps)
        steps = rt.history.get_steps(record.id)
        ok = StepStatus.SUCCEEDED
        kept.update({s.step_id: s.result for s in steps if s.step_id in done and s.status == ok})
    sinks = [s for s in spec.sinks if s in kept]
    rt.state.init_run(record.id, record.inputs, kept, sinks)
