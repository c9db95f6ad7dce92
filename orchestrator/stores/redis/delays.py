"""Messages whose delay is too long for the broker, kept durably in Redis until due.

On Redis, a message held back by ``countdown``/``eta`` stays unacknowledged in a worker, and is
delivered again after ``visibility_timeout``: a retry delay longer than that would run twice
(field notes, "Delivery"). Such delays are kept in a sorted set scored by due time instead; a
pump in each worker's main process moves due messages to the broker. Taking a message is a
ZREM, which only one pump can win.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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


class DelayPump:
    """A thread that publishes due delayed messages every ``interval`` seconds."""

    def __init__(
        self,
        delays: DelayedMessages,
        publish: Callable[[dict[str, Any]], None],
        interval: float = 0.5,
    ) -> None:
        self.delays = delays
        self.publish = publish
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orchestrator-delays", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.pump_once()
            except redis.RedisError as exc:
                log.warning("delayed messages not pumped: %s", exc)
            except Exception as exc:  # the broker is away: kept for the next pass
                log.warning("delayed messages not published: %s", exc)

    def pump_once(self) -> int:
        due = self.delays.take_due(time.time())
        for index, message in enumerate(due):
            try:
                self.publish(message)
            except Exception:
                log.exception("publishing a delayed message failed; kept for the next pass")
                for rest in due[index:]:
                    self.delays.add(rest, time.time())
                raise
        return len(due)
