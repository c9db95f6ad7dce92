"""Which fire times one fire of a schedule starts runs for: catch-up after downtime, and pauses.

Beat sends a fire message for the latest slot ``F`` at or before the moment ``S`` it sends it: at
each slot, and once for every scheduled workflow when beat starts (the *start-up check*, so
that a beat that was down catches up at once, with or without its schedule file). The fire task
decides under the workflow's schedule lock, against the last fire time handled ``L`` (PostgreSQL,
``schedule_states``: it survives a beat restart and is shared by every beat):

- paused: no run; ``F`` counts as handled (a resumed schedule does not catch up on its pause);
- ``L >= F``: ``F`` was handled already (by another beat's message, or a retry): no run;
- no ``L`` yet (a new schedule, or the first fire after upgrading): a regular fire starts ``F``;
  the start-up check only records ``F`` (a new schedule waits for its first slot, as before);
- otherwise the due fire times are the slots in (``L``, ``F``]. ``F`` is *on time* when beat sent
  it at its slot (``S - F`` at most half a period, and at most a minute) and not from the
  start-up check; every other due fire time was *missed*. Then by ``catchup``:

  - ``latest`` (the default; what beat did before this option existed): one run, for ``F``;
  - ``all``: one run per due fire time, oldest first; at most :data:`CATCHUP_LIMIT` (the latest
    ones), with a warning naming how many were dropped;
  - ``none``: a run for ``F`` when it is on time, none for missed fire times.

``F`` is then recorded as handled. With ``overlap: skip`` the fire is one decision: while the
previous scheduled run is unfinished, none of its runs starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orchestrator.core.spec import ScheduleSpec
from orchestrator.ops.fire_times import count_fire_times, latest_fire_times
from orchestrator.ops.schedule import period
from orchestrator.records import ScheduleState

CATCHUP_LIMIT = 100
"""Most runs one ``catchup: all`` fire starts (the latest missed fire times)."""
ON_TIME_MAX = 60.0
"""Seconds after its slot that a regular send still counts as on time (at most half a period)."""
_COUNT_CAP = 100_000  # missed cron slots counted for the log at most


@dataclass(frozen=True)
class FireDecision:
    """The fire times to start runs for (oldest first), why, and how many missed ones were
    dropped by the cap."""

    start: tuple[datetime, ...]
    note: str = ""
    missed: int = 0
    dropped: int = 0


def on_time(schedule: ScheduleSpec, fire: datetime, sent: datetime) -> bool:
    """Whether a message sent at ``sent`` for slot ``fire`` was sent at that slot."""
    grace = min(ON_TIME_MAX, period(schedule.cron, schedule.every, fire) / 2)
    return (sent - fire) <= timedelta(seconds=grace)


def decide(
    schedule: ScheduleSpec,
    state: ScheduleState,
    fire: datetime,
    sent: datetime,
    startup: bool = False,
    limit: int = CATCHUP_LIMIT,
) -> FireDecision:
    """What one fire of ``schedule`` for slot ``fire``, sent at ``sent``, starts (see the
    module's docstring); pure: the caller reads ``state`` and records ``fire`` afterwards."""
    last = state.last_fire_time
    if state.paused:
        return FireDecision((), "paused")
    if last is not None and last >= fire:
        return FireDecision((), f"already handled (last fire time {last.isoformat()})")
    timely = not startup and on_time(schedule, fire, sent)
    if last is None:
        if startup:
            return FireDecision((), "first start of this schedule: waiting for its next slot")
        return FireDecision((fire,))
    missed = count_fire_times(schedule.cron, schedule.every, last, fire, _COUNT_CAP)
    missed -= 1 if timely else 0
    if missed <= 0:
        return FireDecision((fire,))
    note = f"{missed} fire time(s) missed since {last.isoformat()} (catchup: {schedule.catchup})"
    if schedule.catchup == "latest":
        return FireDecision((fire,), note, missed)
    if schedule.catchup == "none":
        return FireDecision((fire,) if timely else (), note, missed)
    due = missed + (1 if timely else 0)
    start = latest_fire_times(schedule.cron, schedule.every, last, fire, min(due, limit))
    return FireDecision(tuple(start), note, missed, max(0, due - len(start)))
