"""The sets of statuses this adapter's SQL asks about, derived from :mod:`orchestrator.status`.

Each set is a tuple of values in its enum's order (for SQLAlchemy's ``in_``) and the same as an
SQL list (for statements written as text). The partial indexes' predicates (``models``) list
their statuses in that order too.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from orchestrator.status import RunStatus, StepStatus


def values(statuses: Iterable[StrEnum]) -> tuple[str, ...]:
    return tuple(s.value for s in statuses)


def sql_list(statuses: tuple[str, ...]) -> str:
    """``('a', 'b')``: the values as an SQL list, for ``IN``."""
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


RUNS_ENDED = values(s for s in RunStatus if s.terminal)
RUNS_UNFINISHED = values(s for s in RunStatus if not s.terminal)
STEPS_ENDED = values(s for s in StepStatus if s.terminal)
STEPS_WAITING = values((StepStatus.PENDING, StepStatus.RETRYING))  # not started, not ended
# how a run's end leaves the steps it presumes not started (a late event may say otherwise)
STEPS_PRESUMED = values((StepStatus.SKIPPED, StepStatus.CANCELLED))

SQL_RUNS_ENDED = sql_list(RUNS_ENDED)
SQL_RUNS_UNFINISHED = sql_list(RUNS_UNFINISHED)
SQL_STEPS_ENDED = sql_list(STEPS_ENDED)
SQL_STEPS_WAITING = sql_list(STEPS_WAITING)
SQL_STEPS_PRESUMED = sql_list(STEPS_PRESUMED)
