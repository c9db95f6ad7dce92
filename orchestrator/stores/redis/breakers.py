"""Circuit-breaker state shared by every worker, in Redis.

The transitions are the pure functions of ``orchestrator.core.breaker``
(:class:`~orchestrator.core.breaker.BreakerTransitions`); this store applies them in an optimistic
transaction (WATCH/MULTI), so two workers never both take the half-open trial. Transitions are
logged and kept (the last ``TRANSITIONS_KEPT`` per breaker) for ``orchestrator breakers``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import redis

from orchestrator.core.breaker import (
    TRANSITIONS_KEPT,
    BreakerState,
    BreakerTransitions,
    Change,
    Clock,
)


def _key(name: str) -> str:
    return f"orch:breaker:{name}"


class RedisBreakerStore(BreakerTransitions):
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
                        pipe.ltrim(f"{key}:log", 0, TRANSITIONS_KEPT - 1)
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
