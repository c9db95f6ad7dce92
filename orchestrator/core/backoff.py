"""Retry policy and the backoff schedule: pure functions, no I/O.

Before attempt ``n + 1`` a step waits ``min(max_delay, base_delay * backoff ** (n - 1))``
seconds; with ``jitter`` it waits a uniform draw between 0 and that ("full jitter").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

F = TypeVar("F")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long apart a failing step is tried again."""

    max_attempts: int = 3
    base_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: bool = True
    on: tuple[type[BaseException] | str, ...] = field(default=())
    """Exception types (or class names, from YAML) that are retried; empty: every Exception."""

    def cap(self, failed_attempt: int) -> float:
        """The longest wait after attempt ``failed_attempt`` (1-based) failed."""
        exponent = max(0, failed_attempt - 1)
        try:
            raw = self.base_delay * self.backoff**exponent
        except OverflowError:
            raw = float("inf")
        return min(self.max_delay, raw)

    def delay(
        self, failed_attempt: int, rng: Callable[[float, float], float] | None = None
    ) -> float:
        """Seconds to wait before the next attempt."""
        cap = self.cap(failed_attempt)
        if not self.jitter:
            return cap
        return (rng or random.uniform)(0.0, cap)

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one of the retried exceptions."""
        if not self.on:
            return isinstance(exc, Exception)
        names = {c.__name__ for c in type(exc).__mro__} | {
            f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__
        }
        return any(
            (isinstance(kind, str) and kind in names)
            or (isinstance(kind, type) and isinstance(exc, kind))
            for kind in self.on
        )

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether a step whose attempt ``attempt`` raised ``exc`` gets another attempt."""
        return attempt < self.max_attempts and self.retries(exc)

    def merged(self, **overrides: Any) -> RetryPolicy:
        """This policy with the given fields replaced (per-step overrides)."""
        values = {k: v for k, v in overrides.items() if v is not None and v != ()}
        return RetryPolicy(**{**self.__dict__, **values})


def retry(
    max_attempts: int = 3,
    base_delay: float = 1.0,
    backoff: float = 2.0,
    max_delay: float = 60.0,
    jitter: bool = True,
    on: tuple[type[BaseException] | str, ...] | type[BaseException] = (),
) -> Callable[[F], F]:
    """Retry a step on failure with exponential backoff; ``max_attempts`` counts the first try.

    The wait happens on the broker (or, when longer than the broker's visibility timeout, in
    Redis), never by sleeping in the worker. Put it below ``@task``; the policy is then
    ``the_task.retry_policy``.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts counts the first try and must be at least 1")
    kinds = on if isinstance(on, tuple) else (on,)
    policy = RetryPolicy(max_attempts, base_delay, backoff, max_delay, jitter, kinds)

    def attach(target: F) -> F:
        target.retry_policy = policy  # type: ignore[attr-defined]
        return target

    return attach
