"""The circuit-breaker state machine: pure functions of a state, the time and a config.

    closed --(failure_threshold consecutive failures)--> open
    open --(reset_timeout elapsed; one caller gets the trial)--> half_open
    half_open --(trial succeeds)--> closed
    half_open --(trial fails)--> open

Stores (Redis for every worker, memory for tests) apply these functions atomically; they share
:class:`BreakerTransitions`, which turns a call's question or outcome into such a change and
notes the transitions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

F = TypeVar("F")
State = Literal["closed", "open", "half_open"]
Decision = Literal["call", "trial", "defer"]
Clock = Callable[[], float]
TRANSITIONS_KEPT = 100  # per breaker, newest first, for ``orchestrator breakers``
log = logging.getLogger("orchestrator.breaker")


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


Change = Callable[[BreakerState], tuple[BreakerState, Any]]
"""A pure change of a breaker's state: the new state, and what to hand back to the caller."""


class BreakerTransitions:
    """What every store does: ask :func:`decide`, :func:`record` an outcome, note transitions.

    A store says how it applies a :data:`Change` atomically (``_apply``) and which ``clock`` it
    reads.
    """

    clock: Clock

    def _apply(self, name: str, change: Change) -> Any:
        raise NotImplementedError

    def acquire(self, cfg: BreakerConfig) -> tuple[Decision, float]:
        """May the caller call now (``call``/``trial``) or must it wait (``defer``, seconds)?"""
        now = self.clock()

        def change(s: BreakerState) -> tuple[BreakerState, Any]:
            decision, new, wait = decide(s, cfg, now)
            return new, (decision, wait)

        result: tuple[Decision, float] = self._apply(cfg.name, change)
        return result

    def report(self, cfg: BreakerConfig, ok: bool, trial: bool) -> BreakerState:
        """Record a call's outcome; returns the new state."""
        now = self.clock()

        def change(s: BreakerState) -> tuple[BreakerState, Any]:
            new = record(s, cfg, ok, trial, now)
            return new, new

        state: BreakerState = self._apply(cfg.name, change)
        return state

    @staticmethod
    def _note(name: str, old: BreakerState, new: BreakerState) -> dict[str, Any] | None:
        """A transition's entry in the breaker's log (None if the state stayed), logged too."""
        if old.state == new.state:
            return None
        log.warning("circuit breaker %r: %s -> %s", name, old.state, new.state)
        return {"at": time.time(), "from": old.state, "to": new.state, "failures": new.failures}


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
