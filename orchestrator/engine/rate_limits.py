"""A step's rate limit at its start: count the start, or defer the step until its turn.

Just before a step's function is called (after its claim, before its breaker and before its
attempt is recorded), :func:`take_start` asks the store (``Services.rate_limits``) to count the
start in the window of the step's key. A full window defers the step exactly as an open breaker
does (:func:`~orchestrator.engine.deferral.defer`): the delivery is given back, no attempt is
used, and the same attempt is published again for when the window has room; no worker sleeps
or polls. A start counted for a call that then does not happen (the breaker defers it) is taken
back. For ``waiting_for``, the probe ``rate_limit`` (:mod:`orchestrator.engine.waiting`) names
a ready step whose window is full, with the key, the limit and when the next start is allowed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.core.rate_limits import KeyFailed, RateLimitSpec, resolve_key
from orchestrator.core.spec import StepSpec
from orchestrator.engine.deferral import defer
from orchestrator.engine.failure import NotRetryable
from orchestrator.engine.waiting import ORDER_FLOW_CONTROL, Waiting, WaitQuery, add_probe

if TYPE_CHECKING:
    from orchestrator.engine.services import Services
    from orchestrator.engine.step import Step

log = logging.getLogger("orchestrator.rate_limits")


class RateLimitKeyError(NotRetryable):
    """A ``key_expr`` that cannot be evaluated with the run's inputs: the step fails at once."""


@dataclass(frozen=True)
class Counted:
    """A start counted in ``key``'s window under ``member`` (to take it back)."""

    key: str
    member: str


def take_start(step: Step) -> Counted | None:
    """Count the step's start against its rate limit (None: it has none); a full window
    defers the step (raises Celery's ``Retry``); a ``key_expr`` that fails raises
    :class:`RateLimitKeyError`."""
    rl = step.spec_step.rate_limit
    if rl is None:
        return None
    key = step_key(step.rt, rl, step.run_id, step.spec.name, step.step_id)
    member = f"{step.run_id}/{step.step_id}/{step.attempt}/{step.owner}"
    wait = step.rt.rate_limits.acquire(key, rl.limit, rl.period, member)
    if wait > 0:
        log.info(
            "step %r of run %s deferred %.3fs by rate limit %r (%d per %gs)",
            step.step_id,
            step.run_id,
            wait,
            key,
            rl.limit,
            rl.period,
        )
        defer(step, wait)
    return Counted(key, member)


def give_back(rt: Services, counted: Counted | None) -> None:
    """Take back a counted start whose function is not called now."""
    if counted is not None:
        rt.rate_limits.release(counted.key, counted.member)


def step_key(rt: Services, rl: RateLimitSpec, run_id: str, workflow: str, step_id: str) -> str:
    """The key the step's starts count against (a ``key_expr`` reads the run's inputs)."""
    inputs: dict[str, Any] = {} if rl.key_expr is None else rt.state.inputs(run_id)
    try:
        return resolve_key(rl, inputs)
    except KeyFailed as exc:
        raise RateLimitKeyError(
            f"workflow {workflow!r}, step {step_id!r}: {exc}; make the expression give a key "
            "for every run's inputs (e.g. with has(inputs.tenant) ? ... : 'default')"
        ) from exc


def rate_limit_waiting(rt: Services, run_id: str, workflow: str, planned: StepSpec) -> str | None:
    """For ``waiting_for``: the detail of a step whose rate-limit window is full now (key,
    limit per period, when the next start is allowed), or None (no limit, or room now)."""
    rl = planned.rate_limit
    if rl is None:
        return None
    try:
        key = step_key(rt, rl, run_id, workflow, planned.id)
    except RateLimitKeyError:
        return None  # the step fails when it is delivered
    at = rt.rate_limits.next_start(key, rl.limit, rl.period)
    if at <= time.time():
        return None
    clock = datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-4]
    return f"rate limit {key!r} ({rl.limit} per {rl.period:g}s) full; next start at {clock}"


def waiting_for_rate_limit(q: WaitQuery) -> Waiting | None:
    """The ``rate_limit`` probe: a ready step whose key's window is full now. Asked once per
    step of the spec and run (the items of a ``for_each`` share their step's answer)."""
    if not q.ready or q.planned.rate_limit is None:
        return None
    asked: dict[str, str | None] = vars(q.shared).setdefault("rate_limit_details", {})
    if q.planned.id not in asked:
        asked[q.planned.id] = rate_limit_waiting(q.rt, q.record.id, q.spec.name, q.planned)
    detail = asked[q.planned.id]
    return None if detail is None else Waiting(q.step.step_id, "rate_limit", detail)


add_probe("rate_limit", waiting_for_rate_limit, ORDER_FLOW_CONTROL)
