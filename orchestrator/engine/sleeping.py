"""``sleep`` and ``wait_for`` steps: they wait holding no worker slot, and survive a worker and
a Redis restart.

Such a step runs the framework's task (:data:`~orchestrator.core.spec.WAIT_TASK`). Its
delivery *parks* it: the step's due time (a sleep's end, a ``wait_for``'s timeout) and the
message that ends it are kept in PostgreSQL (``WaitStore.park``; a step parked again keeps its
first due time), its lease is held in a waiting owner's name (so the reconciler does not take it
for a lost step), a wake-up is put in the delay store (Redis, the fast path, published by the
delay pump on time) and the delivery returns. A later delivery of that message (a *wake*: the
timer, a signal, the reconciler) ends the step:

- a ``wait_for`` whose signal has arrived succeeds with the payload of the first signal of that
  name the run received (signals are kept, in order, and never consumed: a signal sent before
  the step was reached counts, and two steps waiting for one name both get it);
- past its due time a ``sleep`` succeeds with its dependency's result (``None`` for a root
  step, ``{step: result}`` for several), and a ``wait_for`` fails, or is skipped with
  ``on_timeout="skip"``;
- otherwise (woken early) it parks again.

Durability: PostgreSQL is the record. The reconciler wakes every parked step that is due, or
whose signal has arrived, but was not woken within :func:`wake_grace` (the delay store's entry
or the message was lost with Redis); a run whose lease vanished with Redis is recovered and its
step parks again with its first due time. A paused run's wake-up is parked with the run's other
messages until it resumes; a run that ends (cancelled, failed) cancels its parked steps
(:func:`end_parked`). Every wake is a plain delivery: the step's claim makes it end once.

The bound: a sleep never ends before its time. Normally it ends within the delay pump's
interval (0.5 s) plus a delivery after it (``bench/bench_sleeping.py``: p99 2.5 s with 1,000
runs waking on a loaded 2-core machine). When its wake-up was lost (Redis restarted without its
data), it ends within :func:`wake_grace` plus one reconciler pass, i.e. ``3 x
ORCHESTRATOR_RECONCILE_INTERVAL`` (15 s by default) plus a delivery after its time, once a
worker runs and the step's queue has drained (the reconciler does not pile wake-ups onto a
backlog that likely holds them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrator.core.wait_checks import WAIT_TASK
from orchestrator.engine.canvas import CTX_KEY
from orchestrator.engine.failure import NotRetryable
from orchestrator.engine.finish import skip, succeeded
from orchestrator.records import ParkedStep
from orchestrator.status import StepStatus

if TYPE_CHECKING:
    from orchestrator.engine.services import Services
    from orchestrator.engine.step import Step

WAKE = "wake"
"""The message-context field of a wake-up: ``timer``, ``signal`` or ``reconciler``."""
DUE = ("timer", "reconciler")
"""Wake-ups published only once the step was due (or, the reconciler's, its signal came)."""


class WaitTimedOut(NotRetryable):
    """A ``wait_for`` step's signal did not come within its ``timeout`` (``on_timeout="fail"``)."""


def parked_owner(step_id: str) -> str:
    """The lease holder of a parked step: its wake-up deliveries take the lease over."""
    return f"parked:{step_id}"


def wake_grace(rt: Services) -> float:
    """How late a wake-up may be before the reconciler publishes it again (the delay pump
    publishes on time: this only covers a wake-up lost with Redis or the broker)."""
    return 2 * rt.settings.reconcile_interval


def run_wait(step: Step, args: tuple[Any, ...]) -> None:
    """Park the step, or (woken, due or signalled) end it."""
    rt, spec = step.rt, step.spec_step
    rt.leases.drop(step.lease_key)
    now, woken = time.time(), step.ctx.get(WAKE)
    if woken in DUE:  # published once due (its time by the publisher's clock): no write
        due: float | None = now
    else:  # its first delivery, a recovery's, or a signal's: parked (again), first due kept
        limit = spec.sleep if spec.sleep is not None else spec.timeout
        later = None if limit is None else now + limit
        due = rt.waits.park(step.run_id, step.step_id, spec.wait_for, later, wake_message(step))
    if spec.wait_for is not None:
        got = rt.waits.signals(step.run_id, spec.wait_for)
        if got:
            _end(step, got[0].payload)
            return
    if due is not None and due <= now:
        if spec.sleep is not None:
            _end(step, args[0] if args else None)
        elif spec.on_timeout == "skip":
            _skip(step, f"no signal {spec.wait_for!r} within {spec.timeout:g}s (on_timeout=skip)")
        else:
            rt.waits.unpark(step.run_id, step.step_id)
            raise WaitTimedOut(
                f"workflow {step.spec.name!r}, step {step.step_id!r}: no signal "
                f"{spec.wait_for!r} within {spec.timeout:g}s; send it with "
                f"`orchestrator signal {step.run_id} {spec.wait_for}` before the timeout, or "
                "set on_timeout='skip'"
            )
        return
    _park(step, due)


def _park(step: Step, due: float | None) -> None:
    rt = step.rt
    if WAKE not in step.ctx:  # its first delivery (or one recovery republished)
        segment = step.plan.segments[step.info.segment]
        step.record(StepStatus.RUNNING, starts_run=not segment.trigger)
    rt.state.release(step.run_id, step.step_id, step.attempt, step.owner)
    rt.state.undo_delivery(step.run_id, step.step_id, step.attempt)  # parking is no attempt
    wait = rt.settings.result_expires + max(0.0, (due or 0.0) - time.time())
    rt.state.renew({step.lease_key: parked_owner(step.step_id)}, int(wait * 1000))
    if due is not None:
        rt.delays.add(with_wake(wake_message(step), "timer"), due)


def _end(step: Step, value: Any) -> None:
    """Succeed with ``value``; unparked after (a crash between leaves a wake-up that finds the
    step done)."""
    succeeded(step, value, step._encode(value))
    step.rt.waits.unpark(step.run_id, step.step_id)


def _skip(step: Step, reason: str) -> None:
    """Skipped on timeout: the running row becomes ``skipped`` (a skip event alone moves only
    steps that never started), and the skip counts toward joins as any skip does."""
    step.rt.waits.skip_parked(step.run_id, step.step_id, reason)
    skip(step, reason)


def wake_message(step: Step) -> dict[str, Any]:
    """The message that delivers this step again (a signature as a dict, on its queue)."""
    ctx = {k: v for k, v in step.ctx.items() if k != WAKE}
    ctx["attempt"] = step.attempt
    options = {"queue": step.spec_step.queue} if step.spec_step.queue else {}
    return {"task": WAIT_TASK, "args": [], "kwargs": {CTX_KEY: ctx}, "options": options}


def with_wake(message: dict[str, Any], reason: str) -> dict[str, Any]:
    """``message`` marked as a wake-up for ``reason``."""
    ctx = {**message["kwargs"][CTX_KEY], WAKE: reason}
    return {**message, "kwargs": {**message["kwargs"], CTX_KEY: ctx}}


def wake(rt: Services, parked: ParkedStep, reason: str) -> None:
    """Publish a parked step's wake-up now."""
    rt.app.signature(with_wake(parked.message, reason)).apply_async()


def wake_due(rt: Services, backlog: Callable[[str], bool] = lambda queue: False) -> int:
    """Wake the parked steps that are due, or whose signal arrived, and were not woken within
    :func:`wake_grace` (the reconciler's pass); at most once per grace period each, and not
    while ``backlog(queue)`` says the step's queue holds messages (its wake-up is likely among
    them: waking it again would only add to the backlog)."""
    grace = wake_grace(rt)
    count = 0
    default = str(rt.app.conf.task_default_queue)
    for parked in rt.waits.due_waits(time.time() - grace):
        if backlog(str(parked.message.get("options", {}).get("queue") or default)):
            continue
        if rt.state.hold(parked.run_id, f"wake:{parked.step_id}", grace):
            wake(rt, parked, "reconciler")
            count += 1
    return count


def end_parked(rt: Services, run_id: str, reason: str) -> list[str]:
    """A run ended (cancelled, failed): its parked steps are cancelled; their ids."""
    return rt.waits.end_waits(run_id, reason)
