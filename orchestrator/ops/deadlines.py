"""Run deadlines: a run still going at its workflow's ``deadline`` fails; steps not yet started
are cancelled. ``engine.submit`` publishes the check when the run starts."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from orchestrator.engine.hooks import on_run_ended
from orchestrator.engine.services import services_of
from orchestrator.engine.submit import DEADLINE_TASK
from orchestrator.status import RunStatus

log = logging.getLogger("orchestrator")


@shared_task(name=DEADLINE_TASK, bind=True, ignore_result=True)
def run_deadline(self: Any, run_id: str, seconds: float) -> bool:
    """Fail a run still going at its deadline; steps not yet started are cancelled."""
    rt = services_of(self.app)
    record = rt.history.get_run(run_id)
    if record is None or RunStatus(record.status).terminal:
        return False
    error = f"deadline exceeded ({seconds:g}s)"
    rt.state.fail(run_id, None, error)
    changed = rt.history.fail_run(run_id, error)
    if changed:
        log.warning(
            "run %s of %s failed: deadline of %gs exceeded", run_id, record.workflow, seconds
        )
        rt.state.notify_done(run_id, RunStatus.FAILED)
        on_run_ended(rt, run_id, RunStatus.FAILED)
        rt.state.end(run_id, RunStatus.FAILED)
    return changed
