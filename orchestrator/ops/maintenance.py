"""The framework's own tasks and worker hooks: run deadlines, the delayed-message pump, and dead
letters for messages no task can take."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import signals

from orchestrator.app import get_app
from orchestrator.engine.runtime import runtime
from orchestrator.records import DeadLetterEvent
from orchestrator.stores.redis.delays import DelayPump

log = logging.getLogger("orchestrator")
app = get_app()
_pump: DelayPump | None = None


@app.task(name="orchestrator.run_deadline", ignore_result=True)
def run_deadline(run_id: str, seconds: float) -> bool:
    """Fail a run still going at its deadline; steps not yet started are cancelled."""
    rt = runtime()
    record = rt.store.get_run(run_id)
    if record is None or record.status in ("succeeded", "failed", "cancelled"):
        return False
    error = f"deadline exceeded ({seconds:g}s)"
    rt.state.fail(run_id, None, error)
    changed = rt.store.fail_run(run_id, error)
    if changed:
        log.warning(
            "run %s of %s failed: deadline of %gs exceeded", run_id, record.workflow, seconds
        )
        rt.state.notify_done(run_id, "failed")
        rt.state.end(run_id, "failed")
    return changed


def schedule_deadline(run_id: str, seconds: float) -> None:
    """Publish the deadline check of a run, durably when it is far off."""
    rt = runtime()
    sig = run_deadline.s(run_id, seconds)
    if seconds < rt.longest_broker_delay:
        sig.apply_async(countdown=seconds)
    else:
        rt.delays.add(dict(sig), time.time() + seconds)


def _publish(message: dict[str, Any]) -> None:
    app.signature(message).apply_async()


@signals.worker_ready.connect(weak=False)
def _start_pump(**_: Any) -> None:
    global _pump
    _pump = DelayPump(runtime().delays, _publish)
    _pump.start()


@signals.worker_shutdown.connect(weak=False)
def _stop_pump(**_: Any) -> None:
    if _pump is not None:
        _pump.stop()


@signals.task_unknown.connect(weak=False)
def _unknown_task(
    name: str | None = None, id: str | None = None, message: Any = None, **_: Any
) -> None:
    """A message for a task no module registered becomes a dead letter (it is not redelivered)."""
    args, kwargs = _arguments(message)
    runtime().writer.submit(
        DeadLetterEvent(
            task=name or "?",
            reason="unregistered",
            at=datetime.now(UTC),
            celery_task_id=id,
            args=args,
            kwargs=kwargs,
            error=f"task {name!r} is not registered on this worker; add its module to "
            "ORCHESTRATOR_TASK_MODULES",
        )
    )


def _arguments(message: Any) -> tuple[Any, Any]:
    try:
        body = message.decode()
    except Exception:
        return None, None
    if isinstance(body, list | tuple) and len(body) >= 2:
        return body[0], body[1]
    return None, None
