"""``waiting_for`` ``concurrency``: the steps of a run that waits in line for a slot of its
workflow's concurrency limit (``engine.waiting``'s probe, registered on import).

The detail names the limit, the key and the run's place in line, e.g.
``2 of 2 runs of 'sync' for key 'acme' running; 3rd in line``.
"""

from __future__ import annotations

from orchestrator.engine.concurrency import waiting_detail
from orchestrator.engine.waiting import ORDER_FLOW_CONTROL, Waiting, WaitQuery, add_probe
from orchestrator.status import RunStatus


def waiting_for_slot(q: WaitQuery) -> Waiting | None:
    """A ready step of a run that was never started because it waits in line (asked of the
    slot store once per run)."""
    record = q.record
    if not q.ready or q.spec.concurrency is None or record.published_at is not None:
        return None
    if record.status == RunStatus.PAUSED:
        return None  # the ``paused`` probe says so first, and resume is what it waits for
    shared = vars(q.shared)
    if "concurrency_detail" not in shared:
        shared["concurrency_detail"] = waiting_detail(q.rt, q.spec, record.id, record.inputs)
    detail = shared["concurrency_detail"]
    return None if detail is None else Waiting(q.step.step_id, "concurrency", detail)


add_probe("concurrency", waiting_for_slot, ORDER_FLOW_CONTROL)
