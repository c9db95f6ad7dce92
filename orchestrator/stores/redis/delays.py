"""Messages whose delay is too long for the broker, kept durably in Redis until due.

On Redis, a message held back by ``countdown``/``eta`` stays unacknowledged in a worker, and is
delivered again after ``visibility_timeout``: a retry delay longer than that would run twice
(field notes, "Delivery"). Such delays are kept in a sorted set scored by due time instead; a
pump in each worker's main process (``orchestrator.ops.delays``) moves due messages to the
broker. Taking a message is a
ZREM, which only one pump can win.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from orchestrator.codec import decode, encode

log = logging.getLogger("orchestrator.delays")
KEY = "orch:delayed"


class DelayedMessages:
    """A durable schedule of signatures to publish later."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def add(self, signature: dict[str, Any], due: float) -> None:
        self.client.zadd(KEY, {encode(signature): due})

    def take_due(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Due messages that this caller won (each is returned to exactly one caller)."""
        taken = []
        due: list[bytes] = self.client.zrangebyscore(KEY, "-inf", now, start=0, num=limit)  # type: ignore[assignment]
        for raw in due:
            if self.client.zrem(KEY, raw):
                taken.append(decode(raw))
        return taken

    def size(self) -> int:
        return int(self.client.zcard(KEY))
