"""What the steps of an unfinished run wait for, as the CLI asks it (``orchestrator show``,
``orchestrator run --wait``): the probes of :mod:`orchestrator.engine.waiting`, and None when
Redis or PostgreSQL cannot be asked (the CLI then says the waits are unknown, and still shows
the run's history)."""

from __future__ import annotations

from orchestrator.engine.services import Services
from orchestrator.engine.waiting import Waiting, run_waits
from orchestrator.records import RunRecord, StepRecord

__all__ = ["Waiting", "waiting_now"]


def waiting_now(rt: Services, record: RunRecord, steps: list[StepRecord]) -> list[Waiting] | None:
    """The steps of ``record`` that wait, and for what, in the order of ``steps``; None when
    the stores cannot be asked."""
    if record.status.terminal:
        return []
    try:
        waits = run_waits(rt, record, steps)
    except Exception:  # Redis or PostgreSQL away: their clients' errors are not ours to name
        return None
    return [waits[s.step_id] for s in steps if s.step_id in waits]
