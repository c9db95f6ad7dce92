"""Step messages waiting under a ``queue_timeout``, in one Redis sorted set scored by due time.

Every process that publishes a step's message notes it here and the worker that receives it
forgets it (``orchestrator.engine.queue_timeouts``); the reconciler takes what is due
(``orchestrator.ops.queue_timeouts``). Taking is a ZREM, which only one caller wins.
"""

from __future__ import annotations

import redis

from orchestrator.stores.redis.run_keys import text

KEY = "orch:queue-timeouts"


class QueueTimeouts:
    """The Redis adapter of ``ports.QueueTimeoutStore``."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def expect(self, member: str, due: float) -> None:
        self.client.zadd(KEY, {member: due})

    def received(self, member: str) -> None:
        self.client.zrem(KEY, member)

    def due(self, now: float, limit: int = 100) -> list[tuple[str, float]]:
        found: list[tuple[bytes, float]] = self.client.zrangebyscore(  # type: ignore[assignment]
            KEY, "-inf", now, start=0, num=limit, withscores=True
        )
        return [(text(m), float(at)) for m, at in found]

    def take(self, member: str) -> bool:
        return bool(self.client.zrem(KEY, member))
