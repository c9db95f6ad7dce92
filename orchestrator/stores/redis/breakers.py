"""Circuit-breaker state shared by every worker: Redis, and an in-memory twin for tests.

The transitions are the pure functions of ``orchestrator.core.breaker``; the Redis store applies
them
in an optimistic transaction (WATCH/MULTI), so two workers never both take the half-open trial.
Transitions are logged and kept (the last 100 per breaker) for ``orchestrator breakers``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

import redis

from orchestrator.core.breaker import (
    BreakerConfig,
    BreakerState,
    Decision,
    decide,
    record,
)

log = logging.getLogger("orchestrator.breaker")
Clock = Callable[[], float]
Change = Callable[[BreakerState], tuple[BreakerState, Any]]


class BreakerStore(Protocol):
    def acquire(self, cfg: BreakerConfig) -> tuple[Decision, float]: ...
    def report(self, cfg: BreakerConfig, ok: bool, trial: bool) -> BreakerState: ...
    def get(self, name: str) -> BreakerState: ...


class _Transitions:
    """Shared logic of the stores: apply a pure change and note state transitions."""

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
        if old.state == new.state:
            return None
        log.warning("circuit breaker %r: %s -> %s", name, old.state, new.state)
        return {"at": time.time(), "from": old.state, "to": new.state, "failures": new.failures}


class MemoryBreakerStore(_Transitions):
    """Breakers in this process only (unit tests, single-process use)."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self.states: dict[str, BreakerState] = {}
        self.transitions: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _apply(self, name: str, change: Change) -> Any:
        with self._lock:
            old = self.states.get(name, BreakerState())
            new, result = change(old)
            self.states[name] = new
            if (note := self._note(name, old, new)) is not None:
                self.transitions.setdefault(name, []).append(note)
            return result

    def get(self, name: str) -> BreakerState:
        return self.states.get(name, BreakerState())


def _key(name: str) -> str:
    return f"orch:breaker:{name}"


class RedisBreakerStore(_Transitions):
    """Breakers shared by every process and host through Redis."""

    def __init__(self, client: redis.Redis, clock: Clock = time.time) -> None:
        self.client = client
        self.clock = clock

    def _apply(self, name: str, change: Change) -> Any:
        key = _key(name)
        while True:
            with self.client.pipeline() as pipe:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    old = _decode(pipe.get(key))  # type: ignore[arg-type]
                    new, result = change(old)
                    note = self._note(name, old, new)
                    pipe.multi()
                    if new != old:
                        pipe.set(key, json.dumps(asdict(new)))
                    if note is not None:
                        pipe.lpush(f"{key}:log", json.dumps(note))
                        pipe.ltrim(f"{key}:log", 0, 99)
                    pipe.sadd("orch:breakers", name)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def get(self, name: str) -> BreakerState:
        return _decode(self.client.get(_key(name)))  # type: ignore[arg-type]

    def names(self) -> list[str]:
        members: set[bytes] = self.client.smembers("orch:breakers")  # type: ignore[assignment]
        return sorted(n.decode() for n in members)

    def history(self, name: str, limit: int = 20) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.client.lrange(f"{_key(name)}:log", 0, limit - 1)]

    def reset(self, name: str) -> None:
        self.client.delete(_key(name))


def _decode(raw: bytes | None) -> BreakerState:
    return BreakerState() if raw is None else BreakerState(**json.loads(raw))
