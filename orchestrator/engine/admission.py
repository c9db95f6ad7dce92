"""Admitting a run through its workflow's concurrency limit, and acting on the answer.

Used by ``engine.submit`` (a new run) and by the reconciler (a run recorded but never
started, e.g. its submitter died, or Redis lost the line it waited in): both ask the slot store
once and do what the answer says. Asking again for a run that holds a slot or waits in line
changes nothing, so the reconciler may ask as often as it likes.
"""

from __future__ import annotations

import logging

from orchestrator.core.concurrency import describe_wait, slot_parts
from orchestrator.engine.concurrency import Gate, start_promoted
from orchestrator.engine.hooks import cancel_run
from orchestrator.engine.services import Services

log = logging.getLogger("orchestrator.concurrency")


def admit(rt: Services, gate: Gate, run_id: str) -> bool:
    """Ask for a slot for ``run_id``; True when it may start now.

    ``queued``: it waits (``pending``) and starts when a slot frees; ``rejected``
    (``cancel_newest``): it is cancelled; with ``cancel_oldest`` the runs it took the slot of
    are cancelled. Runs that got a slot meanwhile are started.
    """
    admission = rt.slots.acquire(gate.name, run_id, gate.limit, gate.on_limit)
    start_promoted(rt, admission.promoted)
    for old in admission.evicted:
        cancel_run(rt, old, f"cancelled by concurrency: {_limit(gate)}, run {run_id} is newer")
    if admission.outcome == "rejected":
        cancel_run(rt, run_id, f"cancelled by concurrency: {_limit(gate)} already running")
        return False
    if admission.outcome == "queued":
        detail = describe_wait(gate.name, admission.held, gate.limit, admission.position)
        rt.history.add_event(run_id, "queued", f"waits for a concurrency slot: {detail}")
        return False
    return True


def _limit(gate: Gate) -> str:
    workflow, key = slot_parts(gate.name)
    of_key = f" for key {key!r}" if key is not None else ""
    return f"{gate.limit} of {gate.limit} runs of {workflow!r}{of_key}"
