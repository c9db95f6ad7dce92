"""A run's concurrency slot: which slot it needs, freeing it when the run ends, and starting
the runs that waited for it.

A run of a workflow with ``concurrency`` (``core.concurrency``) needs a slot of its *gate*
(its slot name, limit and ``on_limit``), computed from its inputs when it is submitted. The
slot name is also kept in the run's results in Redis (field :data:`SLOT`), so that the end of
any run costs nothing more than the read ``engine.hooks`` already makes, and only the end of a
run that has a slot touches the slot store.

When a run ends (``hooks.on_run_ended``), :func:`release` frees its slot (or takes it out of
the line); the waiting runs that got the freed slots are started by a message each
(:data:`START_TASK`, ``engine.queued``), so a slot that frees starts the next run in line with
no polling loop, and a worker that dies before starting it leaves the message to another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.core.concurrency import describe_wait, key_of, slot_name
from orchestrator.core.spec import WorkflowSpec

if TYPE_CHECKING:
    from orchestrator.engine.services import Services

log = logging.getLogger("orchestrator.concurrency")

SLOT = "__slot__"
"""The field of a run's results (in Redis) that names its concurrency slot."""
START_TASK = "orchestrator.start_queued"
"""The framework's task that starts a run that waited for a concurrency slot."""


@dataclass(frozen=True)
class Gate:
    """The slot a run needs: its name (workflow and key), the limit and ``on_limit``."""

    name: str
    limit: int
    on_limit: str


def gate_of(spec: WorkflowSpec, inputs: dict[str, Any]) -> Gate | None:
    """The run's gate, or None when its workflow has no limit; ``ConcurrencyKeyError`` when
    the key cannot be evaluated over ``inputs``."""
    cc = spec.concurrency
    if cc is None:
        return None
    return Gate(slot_name(spec.name, key_of(spec.name, cc, inputs)), cc.max_runs, cc.on_limit)


def release(rt: Services, slot: str, run_id: str) -> list[str]:
    """Free the run's slot (or its place in line) and start the runs that got a slot."""
    promoted = rt.slots.release(slot, run_id)
    start_promoted(rt, promoted)
    return promoted


def release_ended(rt: Services, run_id: str, stored: dict[str, Any]) -> None:
    """``hooks.on_run_ended``'s part: free the slot named in the run's ``stored`` results.
    An error is logged: the reconciler frees a slot whose run has ended."""
    slot = stored.get(SLOT)
    if not slot:
        return
    try:
        release(rt, str(slot), run_id)
    except Exception:
        log.exception("run %s ended: its concurrency slot could not be freed yet", run_id)


def start_promoted(rt: Services, run_ids: list[str] | tuple[str, ...]) -> None:
    """Publish the start of each run that got a slot (``engine.queued`` starts it)."""
    for run_id in run_ids:
        rt.app.signature(START_TASK, args=(run_id,)).apply_async()


def waiting_detail(
    rt: Services, spec: WorkflowSpec, run_id: str, inputs: dict[str, Any]
) -> str | None:
    """What a run waiting in line waits for (``waiting_for`` ``concurrency``), e.g.
    ``2 of 2 runs of 'sync' for key 'acme' running; 3rd in line``; None when it is not in
    line."""
    gate = gate_of(spec, inputs)
    if gate is None:
        return None
    state, position, held, limit = rt.slots.where(gate.name, run_id)
    if state != "waiting":
        return None
    return describe_wait(gate.name, held, limit or gate.limit, position)
