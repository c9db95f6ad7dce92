"""The reconciler's part for concurrency slots: no slot leaks, no run waits in a line that was
lost, and a run in line is never published by mistake.

Each pass (``ops.reconciler``):

1. when the slot store lost its state (Redis restarted without persistence: the marker only a
   repair sets is gone), every run started and not ended of a workflow with a limit is
   recorded again as holding its slot (from PostgreSQL);
2. a holder whose run has ended (its end could not free the slot: Redis was away, the process
   died in between) gives the slot back, and the next run in line starts (holders are looked
   at once they have held their slot for the recovery grace, ``ops.recovery.recovery_grace``);
3. a run recorded but never published is published only when it holds a slot
   (:func:`may_publish`): a run waiting in line is left there, and one the line lost (or
   whose submitter died before asking) asks again, in submit order.
"""

from __future__ import annotations

import logging
import time

from orchestrator.core import registry
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.admission import admit
from orchestrator.engine.concurrency import Gate, gate_of, release
from orchestrator.engine.services import Services
from orchestrator.errors import OrchestratorError
from orchestrator.ops.recovery import recovery_grace
from orchestrator.records import RunQuery, RunRecord
from orchestrator.status import RunStatus

log = logging.getLogger("orchestrator.recovery")
REBUILD_LIMIT = 10_000
"""Most unfinished runs per workflow and status read back when the slot state was lost."""


def repair_slots(rt: Services, limit: int = 500, now: float | None = None) -> int:
    """Rebuild lost slot state, then free the slots of runs that ended (at most ``limit``
    holders looked at; ``now``: epoch seconds, a test's clock); how many slots were changed."""
    changed = 0
    if not rt.slots.intact():
        changed += _rebuild(rt)
        rt.slots.mark_intact()
    return changed + _free_ended(rt, limit, time.time() if now is None else now)


def may_publish(rt: Services, run_id: str) -> bool:
    """Whether a run recorded but never published may be published now: it has no limit, or
    it has held a slot for the recovery grace (so its ``start_queued`` message was lost), or
    it asked for one now (being in no line) and got it."""
    record = rt.history.get_run(run_id)
    gate = _gate(rt, record) if record is not None else None
    if gate is None:
        return True
    state, _, _, limit = rt.slots.where(gate.name, run_id)
    if state == "held":  # its start message had time to start it, and did not
        return run_id in rt.slots.held_since(gate.name, time.time() - recovery_grace(rt))
    if state == "waiting" and limit:
        return False  # its turn comes when a slot frees
    return admit(rt, gate, run_id)


def _rebuild(rt: Services) -> int:
    rt.load_modules()
    held = 0
    for workflow in registry.all_workflows():
        if workflow.concurrency is None:
            continue
        for status in (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.PENDING):
            query = RunQuery(workflow=workflow.name, status=status)
            for record in rt.history.find_runs(query, limit=REBUILD_LIMIT):
                gate = _gate(rt, record) if record.published_at is not None else None
                if gate is not None:
                    rt.slots.hold(gate.name, record.id, gate.limit)
                    held += 1
    log.warning("concurrency slots rebuilt from history: %d runs hold a slot", held)
    return held


def _free_ended(rt: Services, limit: int, now: float) -> int:
    """Only holders that got their slot a while ago are looked at: a run that ends frees its
    own slot at once, so a pass costs nothing for the runs that come and go."""
    freed, looked = 0, 0
    before = now - recovery_grace(rt)
    for slot in rt.slots.slots():
        for run_id in rt.slots.held_since(slot, before)[: max(0, limit - looked)]:
            looked += 1
            record = rt.history.get_run(run_id)
            if record is None or record.status.terminal:
                release(rt, slot, run_id)
                log.warning("run %s had ended holding a concurrency slot: freed", run_id)
                freed += 1
    return freed


def _gate(rt: Services, record: RunRecord) -> Gate | None:
    """The gate of a run, from the spec it was submitted with."""
    data = rt.history.load_spec(record.workflow_version)
    if data is None:
        return None
    try:
        return gate_of(WorkflowSpec.model_validate(data), record.inputs)
    except (OrchestratorError, ValueError):  # a spec or key this version cannot read
        log.warning("run %s: its concurrency key cannot be read; left as it is", record.id)
        return None
