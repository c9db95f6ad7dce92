"""Beat's tasks and their wiring: start a scheduled run for one fire time, delete old history.

``celery -A orchestrator.worker beat`` sends :data:`~orchestrator.ops.schedule.FIRE_TASK` for each
slot of each workflow's ``schedule`` (see :mod:`orchestrator.ops.schedule` for fire times and the
missed-fire policy), and :data:`~orchestrator.ops.schedule.CLEANUP_TASK` every hour.

- One run per (workflow, fire time): the run's idempotency key is
  ``schedule:<workflow>:<fire time>``, so the message of a second beat process starts nothing.
- Under a per-workflow PostgreSQL lock, a fire reads the schedule's state (``schedule_states``:
  paused, last fire time handled), starts what :func:`orchestrator.ops.catchup.decide` says
  (catch-up of missed fire times, nothing while paused), and records its fire time as handled.
  ``orchestrator schedules pause`` thus takes effect at the next fire, without restarting beat.
- When beat starts, :func:`check_missed` sends each schedule's fire message once (the start-up
  check), so missed fire times are caught up at once rather than at the next slot.
- ``overlap: skip``: a fire does not start a run while the newest scheduled run of the workflow
  is unfinished (pending, running or paused).
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
from celery.beat import BeatLazyFunc
from celery.signals import beat_init

from orchestrator.core import registry
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.services import Services, services_of
from orchestrator.engine.submit import Submission, resolve, submit
from orchestrator.errors import ServiceUnavailable
from orchestrator.ops.catchup import CATCHUP_LIMIT, FireDecision, decide
from orchestrator.ops.schedule import (
    CLEANUP_TASK,
    ENTRY_PREFIX,
    FIRE_TASK,
    beat_entries,
    idempotency_key,
)
from orchestrator.records import ScheduledRun
from orchestrator.settings import Settings
from orchestrator.status import Trigger
from orchestrator.stores.postgres.housekeeping import (
    TRANSIENT_ERRORS,
)

log = logging.getLogger("orchestrator.schedule")
STARTUP_CHECK = "orchestrator.schedule.check_missed"
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
    sent_at: str | None = None,
    startup: bool = False,
) -> dict[str, Any]:
    """Start the runs of ``workflow`` that this fire for ``fire_time`` calls for (usually the
    run of ``fire_time``; catch-up, pause and overlap: :mod:`orchestrator.ops.catchup`), then
    record ``fire_time`` as handled."""
    rt = services_of(task.app)
    target = WorkflowSpec.model_validate(spec) if spec else resolve(rt, workflow)
    outcome: dict[str, Any] = {"workflow": workflow, "fire_time": fire_time, "run_id": None}
    if target.schedule is None:
        log.warning("schedule %s %s: the workflow has no schedule any more", workflow, fire_time)
        return {**outcome, "skipped": "no schedule"}
    fire_at = datetime.fromisoformat(fire_time)
    sent = datetime.fromisoformat(sent_at) if sent_at else fire_at  # older messages: on time
    with rt.history.schedule_slot(workflow) as latest:
        state = rt.history.schedule_state(workflow)
        decision = decide(target.schedule, state, fire_at, sent, startup)
        _log_decision(workflow, fire_time, decision)
        keys = [idempotency_key(workflow, t.isoformat()) for t in decision.start]
        reason = _overlapping(latest, keys) if keys and overlap == "skip" else ""
        if reason:
            log.info("schedule %s %s: skipped, %s (overlap: skip)", workflow, fire_time, reason)
        elif not keys:
            reason = decision.note or "nothing due"
        run_ids = [] if reason else [start_run(rt, target, inputs, key) for key in keys]
        rt.history.record_fire(workflow, fire_at)
    if reason:
        return {**outcome, "skipped": reason}
    if len(run_ids) > 1:
        outcome["run_ids"] = run_ids
    return {**outcome, "run_id": run_ids[-1]}


def _overlapping(latest: ScheduledRun | None, keys: list[str]) -> str:
    """Why ``overlap: skip`` starts none of ``keys``' runs ("" when they may start)."""
    if latest is None or latest.finished or latest.idempotency_key in keys:
        return ""  # the same key: a retry after a partial submit goes on
    return f"run {latest.id} is still {latest.status}"


def _log_decision(workflow: str, fire_time: str, decision: FireDecision) -> None:
    if decision.dropped:
        log.warning(
            "schedule %s %s: %s; starting the latest %d, not the %d before them (catchup: all "
            "starts at most %d runs per fire; `orchestrator schedules backfill` starts the rest)",
            workflow,
            fire_time,
            decision.note,
            len(decision.start),
            decision.dropped,
            CATCHUP_LIMIT,
        )
    elif not decision.start:
        log.info("schedule %s %s: no run (%s)", workflow, fire_time, decision.note)
    elif decision.note:
        log.info(
            "schedule %s %s: %s; starting %d run(s)",
            workflow,
            fire_time,
            decision.note,
            len(decision.start),
        )


def start_run(
    rt: Services, target: WorkflowSpec | str, inputs: dict[str, Any] | None, key: str
) -> str:
    """Submit the scheduled run keyed ``key`` (the run that has that key, if one does)."""
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
    beat_init.connect(check_missed, weak=False, dispatch_uid=STARTUP_CHECK)
    days = float(settings.retention_days)
    _check_retention(days, settings.result_expires)
    entries = beat_entries(registry.all_workflows(), days)
    app.conf.beat_schedule = {**(app.conf.beat_schedule or {}), **entries}


def check_missed(sender: Any = None, **_: Any) -> None:
    """When beat starts (``beat_init``): send each scheduled workflow's fire message once, marked
    as the start-up check, so fire times missed while beat was down are caught up at once (the
    fire task decides which, :mod:`orchestrator.ops.catchup`), with or without beat's own
    schedule file."""
    app: Celery = sender.app
    entries = {
        name: entry
        for name, entry in (app.conf.beat_schedule or {}).items()
        if name.startswith(ENTRY_PREFIX) and entry.get("task") == FIRE_TASK
    }
    for name, entry in entries.items():
        kwargs = {k: v() if isinstance(v, BeatLazyFunc) else v for k, v in entry["kwargs"].items()}
        try:
            app.send_task(FIRE_TASK, kwargs={**kwargs, "startup": True}, **entry["options"])
        except Exception as exc:  # the broker away: beat's regular fires catch up later
            log.warning("schedule %s: start-up check not sent: %s", name, exc)
    if entries:
        log.info(
            "schedule: start-up check sent for %d schedule(s) (missed fire times)",
            len(entries),
        )


def _check_retention(days: float, result_expires: int) -> None:
    if 0 < days * 86400 < result_expires:
        log.warning(
            "retention_days (%g) is shorter than result_expires (%ds): history is deleted "
            "before the runs' Celery results and Redis state expire",
            days,
            result_expires,
        )
