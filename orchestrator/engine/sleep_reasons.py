"""What a parked ``sleep`` or ``wait_for`` step waits for (``StepRun.waiting_for``): ``sleep``
until its due time, or ``signal`` (its name, and its timeout), read from the parked step's row
(``WaitStore.parked``) when asked, never guessed from elapsed time."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.engine.waiting import ORDER_WAIT_STEPS, Waiting, WaitQuery, add_probe
from orchestrator.status import RunStatus, StepStatus


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parked_step(q: WaitQuery) -> Waiting | None:
    if not q.planned.waits or q.step.status != StepStatus.RUNNING:
        return None
    found = next((p for p in q.rt.waits.parked(q.record.id) if p.step_id == q.step.step_id), None)
    if found is None:
        return None  # ending, or parked moments from now
    held = (
        "; the run is paused: it wakes once resumed" if q.record.status == RunStatus.PAUSED else ""
    )
    if q.planned.sleep is not None and found.due is not None:
        return Waiting(q.step.step_id, "sleep", f"sleeping until {_at(found.due)}{held}")
    until = f", until {_at(found.due)} (then {q.planned.on_timeout or 'fail'})" if found.due else ""
    how = f"orchestrator signal {q.record.id} {q.planned.wait_for} -d JSON"
    return Waiting(
        q.step.step_id, "signal", f"signal {q.planned.wait_for!r}{until}{held}; send it: {how}"
    )


add_probe("parked", parked_step, ORDER_WAIT_STEPS)
