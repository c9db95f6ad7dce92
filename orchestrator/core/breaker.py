"""The circuit-breaker state machine: pure functions of a state, the time and a config.

    closed --(failure_threshold consecutive failures)--> open
    open --(reset_timeout elapsed; one caller gets the trial)--> half_open
    half_open --(trial succeeds)--> closed
    half_open --(trial fails)--> open

Stores (Redis for every worker, memory for tests) apply these functions atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

F = TypeVar("F")
State = Literal["closed", "open", "half_open"]
Decision = Literal["call", "trial", "defer"]


@dataclass(frozen=True)
class BreakerConfig:
    name: str
    failure_threshold: int = 5
    reset_timeout: float = 30.0
    on: tuple[type[BaseException] | str, ...] = ()
    """Exceptions that count as failures; empty: every Exception."""
    trial_timeout: float = 300.0
    """A trial not reported within this long is presumed lost, and another one is allowed."""

    def counts(self, exc: BaseException) -> bool:
        if not self.on:
            return isinstance(exc, Exception)
        names = {c.__name__ for c in type(exc).__mro__}
        return any(
            (isinstance(k, str) and k in names) or (isinstance(k, type) and isinstance(exc, k))
            for k in self.on
        )


@dataclass(frozen=True)
class BreakerState:
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    trial_started: float = 0.0
    successes: int = 0
    total_failures: int = 0


def decide(s: BreakerState, cfg: BreakerConfig, now: float) -> tuple[Decision, BreakerState, float]:
    """Whether a caller may call now; the new state; and, when deferred, seconds to wait."""
    if s.state == "closed":
        return "call", s, 0.0
    if s.state == "open":
        wait = s.opened_at + cfg.reset_timeout - now
        if wait > 0:
            return "defer", s, wait
        return "trial", replace(s, state="half_open", trial_started=now), 0.0
    if now - s.trial_started >= cfg.trial_timeout:
        return "trial", replace(s, trial_started=now), 0.0
    return "defer", s, min(cfg.reset_timeout, 1.0)


def record(s: BreakerState, cfg: BreakerConfig, ok: bool, trial: bool, now: float) -> BreakerState:
    """The state after a call's outcome (``trial``: it was the half-open trial call)."""
    if ok:
        if trial or s.state == "closed":
            return replace(s, state="closed", failures=0, successes=s.successes + 1)
        return replace(s, successes=s.successes + 1)
    failed = replace(s, total_failures=s.total_failures + 1)
    if trial:
        return replace(failed, state="open", opened_at=now, failures=failed.failures + 1)
    if s.state != "closed":
        return failed
    count = s.failures + 1
    if count >= cfg.failure_threshold:
        return replace(failed, state="open", opened_at=now, failures=count)
    return replace(failed, failures=count)


def circuit_breaker(
    name: str,
    failure_threshold: int = 5,
    reset_timeout: float = 30.0,
    on: tuple[type[BaseException] | str, ...] | type[BaseException] = (),
) -> Callable[[F], F]:
    """Guard a step with the breaker ``name``, shared by every worker through Redis.

    While the breaker is open the step is deferred (no attempt used) until it half-opens; a
    direct call of the function raises ``CircuitOpenError``. The config is ``the_task.breaker``.
    """
    kinds = on if isinstance(on, tuple) else (on,)
    cfg = BreakerConfig(name, failure_threshold, reset_timeout, kinds)

    def attach(target: F) -> F:
        target.breaker = cfg  # type: ignore[attr-defined]
        return target

    return attach
