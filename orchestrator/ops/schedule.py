"""When beat starts scheduled runs: fire-time math, the beat schedule class and beat's entries.

Fire times are deterministic, so that every beat process names the same slot the same way:

- ``every: N`` slots are the multiples of N seconds since the Unix epoch (UTC), so two beats
  started at different moments still agree (``every: 86400`` fires at 00:00 UTC).
- ``cron`` slots are the minutes matching a five-field expression, evaluated in UTC, with the
  classic cron rule for days: when both day-of-month and day-of-week are restricted (neither
  starts with ``*``) a day matching either one fires, otherwise both must match.

Beat computes the fire time when it sends the message (the latest slot at or before that
moment) and the fire task submits the run with ``idempotency_key="schedule:<workflow>:<fire
time ISO>"``, so a second beat's message for the same slot starts nothing.

Missed fire times (beat was down, or too busy) are decided by the fire task against the last
fire time handled, kept in PostgreSQL: see :mod:`orchestrator.ops.catchup` (``catchup: latest``,
the default, starts one run for the latest of them). A fire message that no worker takes within
one period (at least a minute, at most a day) expires, so a long worker outage does not turn into
a burst of messages. :mod:`orchestrator.ops.fire_times` lists the slots of a range (catch-up and
``orchestrator schedules backfill``); :func:`describe` is how the CLI and the console show a
schedule.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.beat import BeatLazyFunc
from celery.schedules import BaseSchedule, schedstate

from orchestrator.core.cron import Cron
from orchestrator.core.spec import ScheduleSpec, WorkflowSpec
from orchestrator.errors import NotScheduled, ScheduleError
from orchestrator.records import ScheduleState

FIRE_TASK = "orchestrator.fire_schedule"
CLEANUP_TASK = "orchestrator.cleanup_history"
ENTRY_PREFIX = "orchestrator:schedule:"
CLEANUP_ENTRY = "orchestrator:retention"
CLEANUP_EVERY = 3600.0

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_NEVER = 3600.0  # how often beat re-checks a cron expression that never matches
_MARGIN = 0.02  # wake just after a slot, not 10 ms before it (beat subtracts 10 ms)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@functools.lru_cache(maxsize=256)
def parsed(cron: str) -> Cron:
    """``cron`` parsed once per process (listing fire times asks for it at every slot)."""
    return Cron.parse(cron)


def cron_previous(cron: Cron, now: datetime) -> datetime | None:
    """The latest slot at or before ``now``, or None if the expression never matches."""
    return cron.previous(utc(now))


def cron_next(cron: Cron, now: datetime) -> datetime | None:
    """The earliest slot strictly after ``now``, or None if the expression never matches."""
    return cron.next(utc(now))


# -- fire times -----------------------------------------------------------------------------------


def step_micros(seconds: float) -> int:
    """One slot of ``every: seconds``, in microseconds (at least one)."""
    return max(1, round(seconds * 1_000_000))


def every_previous(seconds: float, now: datetime) -> datetime:
    """The latest multiple of ``seconds`` since the epoch at or before ``now`` (µs-exact)."""
    step = step_micros(seconds)
    micros = (utc(now) - EPOCH) // _MICRO
    return EPOCH + timedelta(microseconds=micros - micros % step)


def previous_fire(cron: str | None, every: float | None, now: datetime) -> datetime | None:
    """The slot a message sent at ``now`` is for: the latest slot at or before ``now``."""
    if every is not None:
        return every_previous(every, now)
    return cron_previous(parsed(cron or ""), now)


def next_fire(cron: str | None, every: float | None, now: datetime) -> datetime | None:
    """The first slot strictly after ``now``."""
    if every is not None:
        return every_previous(every, now) + timedelta(microseconds=step_micros(every))
    return cron_next(parsed(cron or ""), now)


def fire_time_iso(cron: str | None, every: float | None, now: datetime | None = None) -> str:
    """The ISO 8601 fire time of a message sent now; what beat puts in the fire message."""
    fire = previous_fire(cron, every, now or datetime.now(UTC))
    return (fire or utc(now or datetime.now(UTC))).isoformat()


def idempotency_key(workflow: str, fire_time: str) -> str:
    """The key that makes a second submit for one (workflow, fire time) harmless."""
    return f"schedule:{workflow}:{fire_time}"


def period(cron: str | None, every: float | None, now: datetime) -> float:
    """Seconds between the next two slots (cron periods vary; this is the coming one)."""
    if every is not None:
        return every
    first = next_fire(cron, None, now)
    second = next_fire(cron, None, first) if first else None
    return (second - first).total_seconds() if first and second else 86400.0


# -- beat -----------------------------------------------------------------------------------------


class FireSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery beat schedule on aligned slots: due once when a slot passed since the last run."""

    def __init__(self, cron: str | None = None, every: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (cron is None) == (every is None):
            raise ScheduleError("<schedule>", "needs exactly one of cron and every")
        self.cron, self.every = cron, every

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = utc(self.now())
        slot = previous_fire(self.cron, self.every, now)
        upcoming = next_fire(self.cron, self.every, now)
        wait = (upcoming - now).total_seconds() + _MARGIN if upcoming else _NEVER
        return schedstate(slot is not None and slot > utc(last_run_at), wait)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        upcoming = next_fire(self.cron, self.every, utc(last_run_at))
        return upcoming - utc(self.now()) if upcoming else timedelta(seconds=_NEVER)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.cron, self.every)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FireSchedule):
            return (self.cron, self.every) == (other.cron, other.every)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.cron, self.every))

    def __repr__(self) -> str:
        return f"<FireSchedule: {describe_schedule(self.cron, self.every)}>"


class FireTime(BeatLazyFunc):  # type: ignore[misc]
    """A beat entry argument evaluated when beat sends the message: the slot's ISO fire time."""

    def __init__(self, cron: str | None = None, every: float | None = None) -> None:
        super().__init__(fire_time_iso, cron, every)
        self.cron, self.every = cron, every

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.cron, self.every)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FireTime):
            return (self.cron, self.every) == (other.cron, other.every)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.cron, self.every))

    def __repr__(self) -> str:
        return f"FireTime({describe_schedule(self.cron, self.every)})"


def sent_at_iso() -> str:
    """The moment beat sends a fire message (ISO 8601, UTC): how late it is for its slot."""
    return datetime.now(UTC).isoformat()


class SentAt(BeatLazyFunc):  # type: ignore[misc]
    """A beat entry argument evaluated when beat sends the message: the moment it is sent."""

    def __init__(self) -> None:
        super().__init__(sent_at_iso)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SentAt)

    def __hash__(self) -> int:
        return hash(SentAt)

    def __repr__(self) -> str:
        return "SentAt()"


def workflow_entry(spec: WorkflowSpec, schedule: ScheduleSpec, now: datetime) -> dict[str, Any]:
    """The beat entry of one scheduled workflow; the message carries the spec beat loaded."""
    expires = min(86400.0, max(60.0, period(schedule.cron, schedule.every, now)))
    return {
        "task": FIRE_TASK,
        "schedule": FireSchedule(schedule.cron, schedule.every),
        "kwargs": {
            "workflow": spec.name,
            "fire_time": FireTime(schedule.cron, schedule.every),
            "sent_at": SentAt(),
            "inputs": dict(schedule.inputs),
            "overlap": schedule.overlap,
            "spec": spec.model_dump(mode="json"),
        },
        "options": {"expires": expires},
    }


def beat_entries(specs: list[WorkflowSpec], retention_days: float) -> dict[str, dict[str, Any]]:
    """``beat_schedule`` entries: one per scheduled workflow, and the hourly history cleanup."""
    now = datetime.now(UTC)
    entries = {
        f"{ENTRY_PREFIX}{spec.name}": workflow_entry(spec, spec.schedule, now)
        for spec in specs
        if spec.schedule is not None
    }
    if retention_days > 0:
        entries[CLEANUP_ENTRY] = {
            "task": CLEANUP_TASK,
            "schedule": FireSchedule(every=CLEANUP_EVERY),
            "options": {"expires": CLEANUP_EVERY},
        }
    return entries


def describe_schedule(cron: str | None, every: float | None) -> str:
    """``cron 0 2 * * *`` or ``every 60s``."""
    return f"cron {cron}" if cron is not None else f"every {every:g}s"


def describe(
    spec: WorkflowSpec, state: ScheduleState | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """One scheduled workflow as ``orchestrator schedules`` and the console show it: its
    schedule, catch-up, pause flag, last fire time handled (from ``state``; None when it is not
    known) and next fire time (UTC)."""
    schedule = spec.schedule
    if schedule is None:
        raise NotScheduled(spec.name, "describe")
    return {
        "workflow": spec.name,
        "schedule": describe_schedule(schedule.cron, schedule.every),
        "cron": schedule.cron,
        "every": schedule.every,
        "inputs": dict(schedule.inputs),
        "overlap": schedule.overlap,
        "catchup": schedule.catchup,
        "paused": None if state is None else state.paused,  # None: not known (PostgreSQL away)
        "last_fire_time": None if state is None else state.last_fire_time,
        "next_fire_time": next_fire(schedule.cron, schedule.every, now or datetime.now(UTC)),
    }
