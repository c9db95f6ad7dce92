"""Five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in UTC.

Pure parsing and slot search, shared by validation (``spec``) and beat's fire times
(``ops.schedule``). As in classic cron, when both day-of-month and day-of-week are restricted,
either one matching is enough. Slots are minutes; ``previous`` and ``next`` take and return UTC
datetimes (the caller makes ``now`` aware).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from orchestrator.errors import ScheduleError

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_NAMES = {3: {n: i + 1 for i, n in enumerate(_MONTHS)}, 4: {n: i for i, n in enumerate(_DAYS)}}
_PART = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")
_MAX_DAYS = 366 * 8 + 2  # the rarest satisfiable day (Feb 29) recurs within 8 years


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression: the allowed values of each field."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day-of-month or day-of-week starts with "*": both must match

    @classmethod
    def parse(cls, expr: str, workflow: str = "<cron>") -> Cron:
        fields = expr.split()
        if len(fields) != 5:
            raise ScheduleError(
                workflow, f"cron {expr!r} has {len(fields)} fields; write 5 (e.g. '0 2 * * *')"
            )
        sets = [_expand(workflow, expr, i, text) for i, text in enumerate(fields)]
        weekdays = frozenset(d % 7 for d in sets[4])
        any_day = fields[2].startswith("*") or fields[4].startswith("*")
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays, any_day)

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        by_date, by_weekday = day.day in self.days, day.isoweekday() % 7 in self.weekdays
        return (by_date and by_weekday) if self.any_day else (by_date or by_weekday)

    def previous(self, now: datetime) -> datetime | None:
        """The latest slot at or before ``now`` (UTC), or None if the expression never matches."""
        start = now.astimezone(UTC).replace(second=0, microsecond=0)
        day, limit = start.date(), (start.hour, start.minute)
        for _ in range(_MAX_DAYS):
            if self.day_matches(day):
                for hour in sorted((h for h in self.hours if h <= limit[0]), reverse=True):
                    cap = limit[1] if hour == limit[0] else 59
                    minutes = [m for m in self.minutes if m <= cap]
                    if minutes:
                        return datetime.combine(day, time(hour, max(minutes)), UTC)
            day, limit = day - timedelta(days=1), (23, 59)
        return None

    def next(self, now: datetime) -> datetime | None:
        """The earliest slot strictly after ``now`` (UTC), or None if it never matches."""
        start = now.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day, limit = start.date(), (start.hour, start.minute)
        for _ in range(_MAX_DAYS):
            if self.day_matches(day):
                for hour in sorted(h for h in self.hours if h >= limit[0]):
                    floor = limit[1] if hour == limit[0] else 0
                    minutes = [m for m in self.minutes if m >= floor]
                    if minutes:
                        return datetime.combine(day, time(hour, min(minutes)), UTC)
            day, limit = day + timedelta(days=1), (0, 0)
        return None


def _expand(workflow: str, expr: str, index: int, text: str) -> frozenset[int]:
    label, low, high = _FIELDS[index]
    values: set[int] = set()
    for part in text.lower().split(","):
        match = _PART.match(part)
        bounds = _bounds(match, low, high, _NAMES.get(index, {})) if match else None
        step = int(match.group(2) or 1) if match else 0
        if bounds is None or step < 1:
            raise ScheduleError(
                workflow, f"cron {expr!r}: {label} {part!r} is not valid ({low}-{high})"
            )
        values.update(range(bounds[0], bounds[1] + 1, step))
    return frozenset(values)


def _bounds(
    match: re.Match[str], low: int, high: int, names: dict[str, int]
) -> tuple[int, int] | None:
    base = match.group(1)
    if base == "*":
        return low, high
    try:
        ends = [names[v] if v in names else int(v) for v in base.split("-")]
    except ValueError:
        return None
    first = ends[0]
    # "5/15" means 5, 20, 35, ...: from the value to the end of the field
    last = ends[1] if len(ends) > 1 else (high if match.group(2) else first)
    return (first, last) if low <= first <= last <= high else None
