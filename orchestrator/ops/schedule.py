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

Missed fire times (beat was down, or too busy): **one catch-up run, not one per missed slot.**
When beat comes back and one or more slots passed since an entry last fired, it fires once, for
the most recent missed slot, then continues on the regular slots. A fire message that no worker
takes within one period (at least a minute, at most a day) expires, so a long worker outage does
not turn into a burst of runs. A new entry (first start of beat, or a new workflow) waits for its
first slot after beat started.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from celery.beat import BeatLazyFunc
from celery.schedules import BaseSchedule, schedstate

from orchestrator.core.cron import Cron
from orchestrator.core.spec import ScheduleSpec, WorkflowSpec
from orchestrator.errors import ScheduleError

FIRE_TASK = "orchestrator.fire_schedule"
CLEANUP_TASK = "orchestrator.cleanup_history"
ENTRY_PREFIX = "orchestrator:schedule:"
CLEANUP_ENTRY = "orchestrator:retention"
CLEANUP_EVERY = 3600.0

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_MAX_DAYS = 366 * 8 + 2  # the rarest satisfiable day (Feb 29) recurs within 8 years
_NEVER = 3600.0  # how often beat re-checks a cron expression that never matches
_MARGIN = 0.02  # wake just after a slot, not 10 ms before it (beat subtracts 10 ms)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def cron_previous(cron: Cron, now: datetime) -> datetime | None:
    """The latest slot at or before ``now``, or None if the expression never matches."""
    start = utc(now).replace(second=0, microsecond=0)
    day, limit = start.date(), (start.hour, start.minute)
    for _ in range(_MAX_DAYS):
        if cron.day_matches(day):
            for hour in sorted((h for h in cron.hours if h <= limit[0]), reverse=True):
                cap = limit[1] if hour == limit[0] else 59
                minutes = [m for m in cron.minutes if m <= cap]
                if minutes:
                    return datetime.combine(day, time(hour, max(minutes)), UTC)
        day, limit = day - timedelta(days=1), (23, 59)
    return None


def cron_next(cron: Cron, now: datetime) -> datetime | None:
    """The earliest slot strictly after ``now``, or None if the expression never matches."""
    start = utc(now).replace(second=0, microsecond=0) + timedelta(minutes=1)
    day, limit = start.date(), (start.hour, start.minute)
    for _ in range(_MAX_DAYS):
        if cron.day_matches(day):
            for hour in sorted(h for h in cron.hours if h >= limit[0]):
                floor = limit[1] if hour == limit[0] else 0
                minutes = [m for m in cron.minutes if m >= floor]
                if minutes:
                    return datetime.combine(day, time(hour, min(minutes)), UTC)
        day, limit = day + timedelta(days=1), (0, 0)
    return None


# -- fire times -----------------------------------------------------------------------------------


def _step(seconds: float) -> int:
    return max(1, round(seconds * 1_000_000))


def every_previous(seconds: float, now: datetime) -> datetime:
    """The latest multiple of ``seconds`` since the epoch at or before ``now`` (µs-exact)."""
    step = _step(seconds)
    micros = (utc(now) - EPOCH) // _MICRO
    return EPOCH + timedelta(microseconds=micros - micros % step)


def previous_fire(cron: str | None, every: float | None, now: datetime) -> datetime | None:
    """The slot a message sent at ``now`` is for: the latest slot at or before ``now``."""
    if every is not None:
        return every_previous(every, now)
    return cron_previous(Cron.parse(cron or ""), now)


def next_fire(cron: str | None, every: float | None, now: datetime) -> datetime | None:
    """The first slot strictly after ``now``."""
    if every is not None:
        return every_previous(every, now) + timedelta(microseconds=_step(every))
    return cron_next(Cron.parse(cron or ""), now)


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


def workflow_entry(spec: WorkflowSpec, schedule: ScheduleSpec, now: datetime) -> dict[str, Any]:
    """The beat entry of one scheduled workflow; the message carries the spec beat loaded."""
    expires = min(86400.0, max(60.0, period(schedule.cron, schedule.every, now)))
    return {
        "task": FIRE_TASK,
        "schedule": FireSchedule(schedule.cron, schedule.every),
        "kwargs": {
            "workflow": spec.name,
            "fire_time": FireTime(schedule.cron, schedule.every),
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
