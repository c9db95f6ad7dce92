"""Global rate limits on step starts: the option's model, its checks, and the sliding window.

A step with ``rate_limit={"key": "openai", "limit": 60, "period": 60}`` starts at most ``limit``
times in any window of ``period`` seconds, counted per key across every worker (as an external
quota counts calls). The key is either a literal (``key``) or a CEL expression over the run's
``inputs`` (``key_expr``, e.g. ``"'openai-' + inputs.tenant"``: one window per tenant); exactly
one of the two is given, so a key is never guessed to be an expression. Both are checked at
validation (:func:`check_rate_limits`).

:func:`slide` is the window itself, a pure function: the Redis store runs the same rule in one
Lua script, the in-memory twin calls it under a lock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celpy import celtypes
from pydantic import BaseModel, ConfigDict

from orchestrator.core.expressions import ConditionFailed, check_names, value_of
from orchestrator.errors import RateLimitError

if TYPE_CHECKING:
    from orchestrator.core.spec import WorkflowSpec


class RateLimitSpec(BaseModel):
    """A step's rate limit: at most ``limit`` starts per ``period`` seconds, per key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    """A literal key: every step (of any workflow) naming it shares one window."""
    key_expr: str | None = None
    """A CEL expression over ``inputs`` whose value (a string or number) is the key."""
    limit: int
    period: float


class KeyFailed(Exception):
    """A ``key_expr`` could not be evaluated with the run's inputs, or gave no usable key."""


def check_rate_limits(spec: WorkflowSpec) -> None:
    """Each step's rate limit: ``limit`` ≥ 1, ``period`` > 0, exactly one of a non-empty
    ``key`` and a ``key_expr`` that parses as CEL over ``inputs``, on a step that calls a task."""
    for step in spec.steps:
        if step.rate_limit is None:
            continue
        if step.workflow is not None or step.waits:
            problem: str | None = (
                "limits the calls of a task; a child `workflow`, `sleep` or `wait_for` step "
                "calls none: put the limit on the steps that call the quota's API"
            )
        else:
            problem = rate_limit_problem(step.rate_limit)
        if problem is not None:
            raise RateLimitError(spec.name, f"rate_limit {problem}", step.id)


def rate_limit_problem(rl: RateLimitSpec) -> str | None:
    """What is wrong with a rate limit, or None."""
    if rl.limit < 1:
        return f"limit={rl.limit} must be at least 1 start per period"
    if not (rl.period > 0 and math.isfinite(rl.period)):
        return f"period={rl.period} must be a positive number of seconds"
    if (rl.key is None) == (rl.key_expr is None):
        return (
            "needs exactly one of `key` (a literal, e.g. 'openai') and `key_expr` "
            "(a CEL expression over inputs, e.g. \"'openai-' + inputs.tenant\")"
        )
    if rl.key is not None and not rl.key.strip():
        return "key is empty; name the quota the starts count against"
    if rl.key_expr is not None:
        problem = check_names(rl.key_expr, ("inputs",))
        return None if problem is None else f"key_expr {problem}"
    return None


def resolve_key(rl: RateLimitSpec, inputs: dict[str, Any]) -> str:
    """The key a start counts against: the literal, or ``key_expr``'s value over ``inputs``."""
    if rl.key is not None:
        return rl.key
    assert rl.key_expr is not None
    try:
        value = value_of(rl.key_expr, {"inputs": inputs})
    except ConditionFailed as exc:
        raise KeyFailed(f"rate_limit key_expr {rl.key_expr!r} failed: {exc}") from exc
    if isinstance(value, bool | celtypes.BoolType) or not isinstance(value, str | int | float):
        raise KeyFailed(
            f"rate_limit key_expr {rl.key_expr!r} gave {value!r} ({type(value).__name__}); "
            "it must give a string or a number"
        )
    key = str(value)
    if not key:
        raise KeyFailed(f"rate_limit key_expr {rl.key_expr!r} gave an empty key")
    return key


def slide(
    starts: Sequence[float], now: float, limit: int, period: float
) -> tuple[float, list[float]]:
    """The sliding window: may a step start at ``now``, given the earlier ``starts`` (sorted)?

    Returns the seconds to wait (0: it may start now) and the starts still in the window,
    ``now`` included when admitted. A start at ``s`` leaves the window at ``s + period``, so
    no half-open window of ``period`` seconds ever holds more than ``limit`` starts. When the
    window is full the wait is until enough starts leave it for one more.
    """
    kept = [s for s in starts if s > now - period]
    if len(kept) < limit:
        return 0.0, [*kept, now]
    frees = kept[len(kept) - limit] + period  # the start whose leaving makes room for one
    return max(frees - now, 1e-9), kept  # > 0 even where floats round


def next_start(starts: Sequence[float], now: float, limit: int, period: float) -> float:
    """When a step may start next (``now`` if at once), without counting a start."""
    wait, _ = slide(starts, now, limit, period)
    return now + wait
