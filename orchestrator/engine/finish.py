"""How a step's delivery ends: it succeeded or was skipped (its result counts toward the joins
it triggers, a join's segment is published once all its parents are done, and the run ends when
its last sink succeeds), it had already succeeded (a redelivery finishes what the first delivery
may not have), its run was cancelled or failed (it stands down), or it failed for good (a dead
letter), also when it was delivered too many times.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore

from orchestrator.codec import Encoded, decode, encode
from orchestrator.engine.canvas import CanvasBuilder, item_id
from orchestrator.engine.conditions import SKIPPED, is_skipped
from orchestrator.engine.failure import fail_run, now
from orchestrator.records import DeadLetterEvent, Outcomes, RunFinal, Settled, SkipSteps
from orchestrator.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.engine.step import Step


def succeeded(
    step: Step,
    result: Any,
    encoded: str,
    recheck: bool = False,
    record: bool = True,
    step_id: str | None = None,
) -> None:
    """Record the result, count it toward joins and sinks, publish and finish what completes.

    ``recheck``: a redelivery, which publishes and finishes also what its first delivery
    counted but may have died before publishing. ``record``: False when the step's end is
    already recorded (a skipped step). ``step_id``: the mapped step whose last item this is."""
    rt, info = step.rt, step.info
    joins = [f"{step.epoch}:{index}" for index in info.triggers]
    # Redis first, then history: a process killed in between (a hard time limit) leaves the
    # result where ``hard_timeout`` and recovery look for it, never a step that history says
    # succeeded while its run fails for want of its result.
    counts, sinks_done = rt.state.finish_step(
        step.run_id, step_id or step.step_id, encoded, joins, info.sink, step.attempt, step.owner
    )
    if not recheck and record:
        step.record(StepStatus.SUCCEEDED, step_id, 1 if step_id else 0, result=Encoded(encoded))
    for index, (added, size) in zip(info.triggers, counts, strict=True):
        segment = step.plan.segments[index]
        if size == len(segment.trigger) and (added or recheck):
            builder_of(step).publish(segment)
    sinks_complete = sinks_done is not None and sinks_done[1] == len(step.spec.sinks)
    if sinks_complete and sinks_done is not None and (sinks_done[0] or recheck):
        finish_run(step)


def skip(step: Step, reason: str) -> None:
    """The step does not run (its ``when``, a skipped dependency): record it skipped and count
    it toward its joins and the run's end like a step that succeeded."""
    step.rt.leases.drop(step.lease_key)
    _record_skip(step, reason)
    succeeded(step, SKIPPED, encode(SKIPPED), record=False)


def _record_skip(step: Step, reason: str) -> None:
    step.rt.writer.submit(
        SkipSteps(step.run_id, (step.step_id,), StepStatus.SKIPPED, now(), reason)
    )


def already_done(step: Step, result: Any) -> Any:
    """A redelivered step that had succeeded: finish what its first delivery may not have.

    Its process may have died after the result reached Redis but before its history was
    written, or before what follows it saw its success: then (no step it leads to was
    delivered yet) its joins are counted again and it returns, so that Celery moves its canvas
    on (a chord counts each header task once). Step messages keep no Celery result, so this is
    read from the run's state, not from Celery's backend.
    """
    if is_skipped(result):
        _record_skip(step, "skipped")
    else:
        step.record(StepStatus.SUCCEEDED, result=result)
    if not step.rt.state.reached(step.run_id, list(step.plan.children.get(step.step_id, ()))):
        succeeded(step, result, encode(result), recheck=True)
        return result
    if step.info.sink:
        _, sinks = step.rt.state.finish_step(
            step.run_id, step.step_id, encode(result), [], True, step.attempt, step.owner
        )
        if sinks is not None and sinks[1] == len(step.spec.sinks):
            finish_run(step)
    raise Ignore()


def finish_run(step: Step) -> None:
    """The run's last sink succeeded: the run ends with the sinks' output.

    The end carries every step's outcome as Redis has it (:func:`settled`): the steps that
    other pool processes ran may still wait in their writers' batches, and the run succeeds in
    history when this end is written, not a flush window later. Its waiters hear of it at once,
    with the output (:class:`EndNotice`), unless the run was paused, cancelled or failed
    meanwhile (history decides then) or the output is over :data:`NOTICE_LIMIT`."""
    sinks, steps = step.spec.sinks, [s.id for s in step.spec.steps]
    small = len(steps) <= SETTLED_LIMIT
    found = step.rt.state.outcomes(step.run_id, steps if small else sinks, times=small)
    values = [decode(found.results[s]) if s in found.results else None for s in sinks]
    values = [None if is_skipped(v) else v for v in values]
    output = values[0] if len(sinks) == 1 else dict(zip(sinks, values, strict=True))
    ended = settled(step, found) if small else ()
    step.rt.writer.submit(RunFinal(step.run_id, RunStatus.SUCCEEDED, now(), output, settled=ended))
    if found.flag is None and len(encoded := encode(output)) <= NOTICE_LIMIT:
        step.rt.state.notify_done(step.run_id, RunStatus.SUCCEEDED, encoded)


NOTICE_LIMIT = 65536
"""Largest encoded output announced with a run's end; a bigger one is read from history."""
SETTLED_LIMIT = 1000
"""Most step and item rows a run's end writes from Redis (a bigger run's rows are its writers')."""
SKIPPED_ENCODED = encode(SKIPPED)


def settled(step: Step, found: Outcomes) -> tuple[Settled, ...]:
    """The outcome of each step of the run, and of each item of its ``for_each`` steps (the
    items of the mapped step's list), as Redis has them; none past :data:`SETTLED_LIMIT`."""

    def moment(times: dict[str, float], name: str) -> datetime | None:
        return datetime.fromtimestamp(times[name], UTC) if name in times else None

    def outcome(name: str, encoded: str, skipped: bool = False) -> Settled:
        started, finished = moment(found.started, name), moment(found.finished, name)
        return Settled(name, encoded, found.attempts.get(name, 1), skipped, started, finished)

    out: list[Settled] = []
    for spec_step in step.spec.steps:
        encoded = found.results.get(spec_step.id)
        if encoded is None:
            continue
        skipped = encoded == SKIPPED_ENCODED
        out.append(outcome(spec_step.id, encoded, skipped))
        items = decode(encoded) if spec_step.for_each and not skipped else None
        if isinstance(items, list):
            if len(out) + len(items) > SETTLED_LIMIT:
                return ()
            out.extend(
                outcome(item_id(spec_step.id, i), encode(item)) for i, item in enumerate(items)
            )
    return tuple(out)


def builder_of(step: Step) -> CanvasBuilder:
    """The canvas of the step's run, for what the step publishes next."""
    return CanvasBuilder(
        step.rt.app,
        step.spec,
        step.plan,
        step.run_id,
        {},
        step.resumed,
        step.epoch,
        priority=step.run_priority,
    )


def stand_down(step: Step, flag: str) -> None:
    """The run was cancelled or failed: neither this step nor what follows it will run.

    A step that waited for its child run (this delivery is the child's end) ends too: as
    succeeded with the child's output when the child succeeded (a retry inherits it), else
    cancelled; the lease its child held for it is released (a retry waits for live leases)."""
    if "child" in step.ctx:
        _end_waiting(step, str(step.ctx["child"]), flag)
    status = StepStatus.CANCELLED if flag == RunStatus.CANCELLED else StepStatus.SKIPPED
    steps = (step.step_id, *step.plan.descendants(step.step_id))
    step.rt.writer.submit(SkipSteps(step.run_id, steps, status, now(), f"run {flag}"))
    raise Ignore()


def _end_waiting(step: Step, child_id: str, flag: str) -> None:
    from orchestrator.engine.children import waiting_owner  # children builds on this module

    rt = step.rt
    child = rt.history.get_run(child_id)
    if child is not None and child.status == RunStatus.SUCCEEDED:
        encoded = encode(child.output)  # in Redis before the lease goes: see engine.inherit
        rt.state.finish_step(step.run_id, step.step_id, encoded, [], False, step.attempt, "")
        step.record(StepStatus.SUCCEEDED, result=Encoded(encoded))
    else:
        error = f"run {flag} while its child run {child_id} ran"
        step.record(StepStatus.CANCELLED, error=error)
    rt.state.release(step.run_id, step.step_id, step.attempt, waiting_owner(child_id))


def undeliverable(
    step: Step, deliveries: int, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """The attempt was delivered again and again (its process keeps dying): give up on it."""
    error = (
        f"attempt {step.attempt} was delivered {deliveries} times without finishing "
        f"(its worker process died each time; limit ORCHESTRATOR_MAX_DELIVERIES="
        f"{step.rt.settings.max_deliveries})"
    )
    step.rt.state.release(step.run_id, step.step_id, step.attempt, step.owner)
    step.record(StepStatus.FAILED, error=error)
    dead_letter(step, "too_many_deliveries", args, kwargs, error, None)
    fail_run(step.rt, step.run_id, step.step_id, error)
    raise Ignore()


def dead_letter(
    step: Step,
    reason: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: str,
    trace: str | None,
) -> None:
    """Keep the message of a step that failed for good, to be replayed."""
    step.rt.writer.submit(
        DeadLetterEvent(
            task=step.task.name,
            reason=reason,
            at=now(),
            run_id=step.run_id,
            step_id=step.step_id,
            celery_task_id=step.task.request.id,
            args=list(args),
            kwargs=kwargs,
            error=error,
            traceback=trace,
        )
    )
