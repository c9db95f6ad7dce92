"""The fire times of a schedule in a range: what catch-up and ``orchestrator schedules
backfill`` start runs for. The slots are those of :mod:`orchestrator.ops.schedule` (aligned
``every``, UTC ``cron``), so a run started for one is keyed exactly as beat keys it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from orchestrator.ops.schedule import EPOCH, next_fire, previous_fire, step_micros, utc

_MICRO = timedelta(microseconds=1)


def _forward(cron: str | None, every: float | None, after: datetime) -> Iterator[datetime]:
    slot = next_fire(cron, every, after)
    while slot is not None:
        yield slot
        slot = next_fire(cron, every, slot)


def _backward(cron: str | None, every: float | None, until: datetime) -> Iterator[datetime]:
    slot = previous_fire(cron, every, until)
    while slot is not None:
        yield slot
        slot = previous_fire(cron, every, slot - _MICRO)


def fire_times(
    cron: str | None, every: float | None, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """The slots in (``after``, ``until``], oldest first: the first ``limit`` of them."""
    found: list[datetime] = []
    for slot in _forward(cron, every, after):
        if slot > until or len(found) >= limit:
            break
        found.append(slot)
    return found


def latest_fire_times(
    cron: str | None, every: float | None, after: datetime | None, until: datetime, limit: int
) -> list[datetime]:
    """The slots in (``after``, ``until``], oldest first: the last ``limit`` of them."""
    found: list[datetime] = []
    for slot in _backward(cron, every, until):
        if (after is not None and slot <= after) or len(found) >= limit:
            break
        found.append(slot)
    return found[::-1]


def count_fire_times(
    cron: str | None, every: float | None, after: datetime, until: datetime, cap: int
) -> int:
    """How many slots are in (``after``, ``until``]; counting stops at ``cap`` for cron (an
    ``every`` schedule is counted exactly, whatever the range)."""
    if until <= after:
        return 0
    if every is not None:
        step = step_micros(every)
        return ((utc(until) - EPOCH) // _MICRO) // step - ((utc(after) - EPOCH) // _MICRO) // step
    return len(fire_times(cron, None, after, until, cap))
