"""Beat's tasks and their wiring: start a scheduled run for one fire time, delete old history.

``celery -A orchestrator.worker beat`` sends :data:`~orchestrator.ops.schedule.FIRE_TASK` for each
slot of each workflow's ``schedule`` (see :mod:`orchestrator.ops.schedule` for fire times and the
missed-fire policy), and :data:`~orchestrator.ops.schedule.CLEANUP_TASK` every hour.

- One run per (workflow, fire time): the run's idempotency key is
  ``schedule:<workflow>:<fire time>``, so the message of a second beat process starts nothing.
- ``overlap: skip``: under a per-workflow PostgreSQL lock, a fire does not start a run while the
  newest scheduled run of the workflow is unfinished (pending, running or paused).
- The message carries the spec beat loaded, so any worker can start the run (its tasks must be
  importable there, as for any submit).
- A fire that meets PostgreSQL or Redis away (``ServiceUnavailable`` or a driver's connection
  error) is retried with backoff until its message expires, one period after beat sent it.
- Retention: finished runs created more than ``retention_days`` (default 30) days ago are
  deleted in batches; 0 disables the cleanup.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery

from orchestrator.core import registry
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.services import Services, services_of
from orchestrator.engine.submit import Submission, resolve, submit
from orchestrator.errors import ServiceUnavailable
from orchestrator.ops.schedule import CLEANUP_TASK, FIRE_TASK, beat_entries, idempotency_key
from orchestrator.settings import Settings
from orchestrator.status import Trigger
from orchestrator.stores.postgres.housekeeping import (
    TRANSIENT_ERRORS,
)

log = logging.getLogger("orchestrator.schedule")
CLEANUP_BATCH = 1000
FIRE_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    ServiceUnavailable,  # what the history store and Redis state raise when a server is away
    *TRANSIENT_ERRORS,  # the driver's own errors, from the overlap lock's queries
    redis.ConnectionError,
    redis.TimeoutError,
)
FIRE_RETRY: dict[str, Any] = {
    # A fire retries while PostgreSQL or Redis is briefly away, with backoff and no count limit
    # (max_retries=None on the task: Task.retry(max_retries=None) would fall back to 3): its
    # message, retries included, expires one period after beat sent it. The run's idempotency
    # key makes a retry after a partial submit harmless: still one run per fire time.
    "autoretry_for": FIRE_TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": None,
}


def fire(
    task: Any,
    workflow: str,
    fire_time: str,
    inputs: dict[str, Any] | None = None,
    overlap: str = "skip",
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the run of ``workflow`` for ``fire_time`` unless it exists or must be skipped."""
    target: WorkflowSpec | str = WorkflowSpec.model_validate(spec) if spec else workflow
    key = idempotency_key(workflow, fire_time)
    outcome: dict[str, Any] = {"workflow": workflow, "fire_time": fire_time, "run_id": None}
    rt = services_of(task.app)
    if overlap == "allow":
        return {**outcome, "run_id": _start(rt, target, inputs, key)}
    with rt.history.schedule_slot(workflow) as latest:
        if latest is not None and not latest.finished and latest.idempotency_key != key:
            log.info(
                "schedule %s %s: skipped, run %s is still %s (overlap: skip)",
                workflow,
                fire_time,
                latest.id,
                latest.status,
            )
            return {**outcome, "skipped": f"run {latest.id} is still {latest.status}"}
        return {**outcome, "run_id": _start(rt, target, inputs, key)}


def _start(
    rt: Services, target: WorkflowSpec | str, inputs: dict[str, Any] | None, key: str
) -> str:
    sub = Submission(inputs=dict(inputs or {}), trigger=Trigger.SCHEDULE, idempotency_key=key)
    run_id = submit(rt, resolve(rt, target), sub)
    log.info("schedule: run %s (%s)", run_id, key)
    return run_id


def cleanup(task: Any, days: float | None = None, batch_size: int = CLEANUP_BATCH) -> int:
    """Delete finished runs older than ``days`` (default: ``ORCHESTRATOR_RETENTION_DAYS``; 0
    keeps them forever); how many were deleted."""
    rt = services_of(task.app)
    keep = rt.settings.retention_days if days is None else days
    if keep <= 0:
        return 0
    cutoff = datetime.now(UTC) - timedelta(days=keep)
    deleted = rt.history.delete_finished_before(cutoff, batch_size)
    log.info("retention: deleted %d finished runs created before %s", deleted, cutoff.isoformat())
    return deleted


def install(app: Celery, settings: Settings) -> None:
    """Register beat's tasks on ``app`` and add an entry per scheduled workflow to its schedule.

    Call it after the task modules and YAML workflows are loaded (``orchestrator.worker`` does).
    """
    for name, func, options in ((FIRE_TASK, fire, FIRE_RETRY), (CLEANUP_TASK, cleanup, {})):
        if name not in app.tasks:
            app.task(name=name, bind=True, ignore_result=True, shared=False, lazy=False, **options)(
                func
            )
    days = float(settings.retention_days)
    _check_retention(days, settings.result_expires)
    entries = beat_entries(registry.all_workflows(), days)
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **entries}


def _check_retention(days: float, result_expires: int) -> None:
    if 0 < days * 86400 < result_expires:
        log.warning(
            "retention_days (%g) is shorter than result_expires (%ds): history is deleted "
            "before the runs' Celery results and Redis state expire",
            days,
            result_expires,
        )
