"""Operators' control of schedules: list them, pause and resume them, backfill a range.

- :func:`pause` and :func:`resume` set the flag in PostgreSQL (``schedule_states``) that beat's
  fire task reads at each fire, so they take effect at the next fire without restarting beat.
  A resume marks the fire times that passed while paused as handled: they are not caught up.
- :func:`backfill` starts one run per fire time in [start, end], keyed exactly as beat keys the
  run of that fire time (``schedule:<workflow>:<fire time>``), so a second backfill, or beat
  having fired one of those times, never makes a second run. It checks everything before it
  starts anything: the workflow, its schedule, the range and the number of fire times.

The CLI (``orchestrator schedules``) and the console call these; so can Python code, with the
services of an app (``orchestrator.app.default_services()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.core import registry
from orchestrator.core.spec import ScheduleSpec, WorkflowSpec
from orchestrator.engine.services import Services
from orchestrator.engine.submit import resolve
from orchestrator.errors import BackfillError, NotScheduled, ServiceUnavailable
from orchestrator.ops.fire_times import count_fire_times, fire_times
from orchestrator.ops.periodic import start_run
from orchestrator.ops.schedule import describe, idempotency_key, previous_fire, utc
from orchestrator.records import ScheduleState

log = logging.getLogger("orchestrator.schedule")
BACKFILL_CONFIRM = 100
"""Most fire times a backfill starts unless told more (``--yes`` or ``limit=``)."""
BACKFILL_MAX = 10_000
"""Most fire times one backfill starts at all: split a longer range."""
_KEYS_PER_QUERY = 1000

Progress = Callable[[datetime, str, bool], None]
"""Called after each fire time of a backfill: (fire time, run id, whether it started now)."""


@dataclass
class Backfill:
    """What a backfill did: the fire times of the range, the runs it started and those that
    were there already (run ids)."""

    workflow: str
    fire_times: list[datetime] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def scheduled(rt: Services, name: str, action: str) -> tuple[WorkflowSpec, ScheduleSpec]:
    """The registered workflow ``name`` and its schedule: ``WorkflowNotFound`` for an unknown
    workflow, ``NotScheduled`` for one without a schedule (nothing to ``action``)."""
    spec = resolve(rt, name)
    if spec.schedule is None:
        raise NotScheduled(name, action)
    return spec, spec.schedule


def schedules(rt: Services, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every scheduled workflow as :func:`~orchestrator.ops.schedule.describe` shows it, with
    its paused state and last fire time (None, with a warning, while PostgreSQL is away)."""
    rt.load_modules()
    specs = sorted(registry.all_workflows(), key=lambda s: s.name)
    scheduled_specs = [s for s in specs if s.schedule is not None]
    try:
        states: dict[str, ScheduleState] | None = (
            rt.history.schedule_states() if scheduled_specs else {}
        )
    except ServiceUnavailable as exc:  # the schedules themselves are still worth showing
        log.warning("paused state and last fire times unknown: %s", exc)
        states = None
    return [
        describe(s, None if states is None else states.get(s.name, ScheduleState(s.name)), now)
        for s in scheduled_specs
    ]


def pause(rt: Services, name: str) -> ScheduleState:
    """Pause ``name``'s schedule: beat's next fire starts nothing (no restart needed)."""
    scheduled(rt, name, "pause")
    return rt.history.set_schedule_paused(name, True)


def resume(rt: Services, name: str, now: datetime | None = None) -> ScheduleState:
    """Resume ``name``'s schedule from its next fire time; the fire times that passed while it
    was paused count as handled (no catch-up for them)."""
    _, schedule = scheduled(rt, name, "resume")
    passed = previous_fire(schedule.cron, schedule.every, utc(now or datetime.now(UTC)))
    return rt.history.set_schedule_paused(name, False, handled_until=passed)


def backfill_times(
    rt: Services, name: str, start: datetime, end: datetime, limit: int = BACKFILL_CONFIRM
) -> tuple[WorkflowSpec, list[datetime]]:
    """The workflow and the fire times of [``start``, ``end``] a backfill of ``name`` starts
    runs for; a named error (and nothing started) for an unknown workflow, one without a
    schedule, a reversed range, or more than ``limit`` fire times."""
    spec, schedule = scheduled(rt, name, "backfill")
    start, end = utc(start), utc(end)
    if end < start:
        raise BackfillError(
            name, f"--to {end.isoformat()} is before --from {start.isoformat()}; swap them"
        )
    limit = min(limit, BACKFILL_MAX)
    before = start - timedelta(microseconds=1)  # the range includes its start
    count = count_fire_times(schedule.cron, schedule.every, before, end, BACKFILL_MAX + 1)
    if count > limit:
        more = f"{count}" if count <= BACKFILL_MAX else f"more than {BACKFILL_MAX}"
        hint = (
            f"pass --yes to start up to {BACKFILL_MAX}, or narrow the range"
            if limit < BACKFILL_MAX
            else "split the range"
        )
        raise BackfillError(
            name,
            f"{start.isoformat()} to {end.isoformat()} holds {more} fire times, more than "
            f"{limit}; {hint}",
        )
    return spec, fire_times(schedule.cron, schedule.every, before, end, limit)


def backfill(
    rt: Services,
    name: str,
    start: datetime,
    end: datetime,
    limit: int = BACKFILL_CONFIRM,
    progress: Progress | None = None,
) -> Backfill:
    """Start one run of ``name`` per fire time in [``start``, ``end``] (see the module's
    docstring), oldest first, with the schedule's inputs; what it started and found."""
    spec, times = backfill_times(rt, name, start, end, limit)
    assert spec.schedule is not None
    done = Backfill(name, times)
    for i in range(0, len(times), _KEYS_PER_QUERY):
        chunk = times[i : i + _KEYS_PER_QUERY]
        keys = [idempotency_key(name, t.isoformat()) for t in chunk]
        there = rt.history.runs_by_key(keys)
        for fire, key in zip(chunk, keys, strict=True):
            new = key not in there
            run_id = start_run(rt, spec, spec.schedule.inputs, key) if new else there[key]
            (done.started if new else done.existing).append(run_id)
            if progress is not None:
                progress(fire, run_id, new)
    return done
