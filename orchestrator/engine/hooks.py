"""What a run's end sets off: its workflow's ``on_failure`` task, and its parent step's end.

Every path that records a run's end announces it (the history writer, a deadline, the
reconciler, a cancel) and calls :func:`on_run_ended` before the run's results are freed.

- A failed run's workflow ``on_failure`` task is published once: a marker in Redis (taken with
  NX) lets only the first announcement publish it. It is called with
  ``{"run_id", "workflow", "step", "error"}``; the run stays ``failed`` whatever it does.
- A child workflow's run keeps its parent step's message context beside its results
  (:data:`PARENT`); its end publishes that message again with the child's id, which ends the
  parent step (``engine.children``).
- A failed or cancelled run cancels its children that have not ended (:func:`cancel_run`),
  and its parked ``sleep``/``wait_for`` steps (``engine.sleeping``).
- A run that holds a concurrency slot, or waits in line for one, frees it; the next run in
  line starts (``engine.concurrency``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from orchestrator.core.spec import CHILD_TASK
from orchestrator.engine.canvas import CTX_KEY
from orchestrator.engine.concurrency import SLOT, release_ended
from orchestrator.status import RunStatus

if TYPE_CHECKING:
    from orchestrator.engine.services import Services

log = logging.getLogger("orchestrator.hooks")

PARENT = "__parent__"
"""The field of a child run's results that holds its parent step's message context."""
MARK = "on_failure"
KEEP_MARK = 7 * 86400.0
"""How long the marker that the hook was published is kept (longer than any redelivery)."""


def on_run_ended(rt: Services, run_id: str, status: str) -> None:
    """Call before the run's state in Redis is freed (``RunStateStore.end``)."""
    try:
        stored = rt.state.stored(run_id, [PARENT, SLOT])
        parent = stored.get(PARENT)
        if parent:
            end_parent_step(rt.app, dict(parent), run_id)
    except Exception:  # the parent is recovered by the reconciler once its wait lapses
        log.exception("run %s ended: its parent step could not be told", run_id)
        stored = {}
    release_ended(rt, run_id, stored)  # its concurrency slot: the next run in line starts
    if status in (RunStatus.FAILED, RunStatus.CANCELLED):
        _end_parked(rt, run_id, f"run {status}")
    if status == RunStatus.FAILED:
        on_run_failed(rt, run_id)
        _cancel_children(rt, run_id, f"parent run {run_id} failed")


def cancel_run(rt: Services, run_id: str, reason: str) -> bool:
    """Cancel a run and then its children that have not ended: nothing new starts, running
    steps finish, parked messages are dropped. False if it had ended meanwhile."""
    rt.state.set_flag(run_id, RunStatus.CANCELLED)
    if not rt.history.cancel_run(run_id, reason):
        return False
    rt.state.resume(run_id)  # parked messages of a paused run are dropped
    rt.history.add_event(run_id, "cancelled", reason)
    pending = rt.history.unfinished_task_ids(run_id)
    if pending:
        rt.app.control.revoke(pending)
    rt.state.notify_done(run_id, RunStatus.CANCELLED)
    on_run_ended(rt, run_id, RunStatus.CANCELLED)
    rt.state.end(run_id, RunStatus.CANCELLED)
    _cancel_children(rt, run_id, f"parent run {run_id} cancelled")
    return True


def _end_parked(rt: Services, run_id: str, reason: str) -> None:
    """Cancel the run's sleeping and waiting steps (``engine.sleeping``): nothing else would
    end them, and their wake-ups stand down."""
    try:
        rt.waits.end_waits(run_id, reason)
    except Exception:  # the wake-up finds the run ended and stands the step down
        log.exception("run %s ended: its sleeping or waiting steps could not be cancelled", run_id)


def _cancel_children(rt: Services, run_id: str, reason: str) -> None:
    try:
        for child in rt.history.children(run_id):
            if not child.status.terminal:
                cancel_run(rt, child.id, reason)
    except Exception:  # each child still ends: its own deadline, or the reconciler
        log.exception("run %s ended: its children could not be cancelled", run_id)


def end_parent_step(app: Any, parent: dict[str, Any], child_id: str) -> None:
    """Publish the parent step's message again (on the step's queue), with the child that
    ended."""
    options = {"queue": parent["queue"]} if parent.get("queue") else {}
    ctx = {**parent, "child": child_id}
    app.signature(CHILD_TASK, kwargs={CTX_KEY: ctx}, **options).apply_async()


def on_run_failed(rt: Services, run_id: str) -> bool:
    """Publish the run's workflow ``on_failure`` task, unless it has none or it was published;
    True when this call published it. An error is logged: the run's end is recorded anyway."""
    try:
        return _publish(rt, run_id)
    except Exception:
        log.exception("run %s failed: its on_failure task could not be published", run_id)
        return False


def _publish(rt: Services, run_id: str) -> bool:
    record = rt.history.get_run(run_id)
    if record is None or record.status != RunStatus.FAILED:
        return False
    spec = rt.history.load_spec(record.workflow_version) or {}
    hook = spec.get("on_failure")
    if not hook or not rt.state.hold(run_id, MARK, KEEP_MARK):
        return False
    failure = {
        "run_id": run_id,
        "workflow": record.workflow,
        "step": record.error_step,
        "error": record.error,
    }
    rt.app.signature(str(hook), args=(failure,)).apply_async()
    log.info("run %s failed: on_failure task %s published", run_id, hook)
    return True
