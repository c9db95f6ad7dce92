"""Live workers in Redis: what each worker consumes and which tasks it has registered.

A worker's main process writes its entry (:class:`WorkerInfo`) under a key that expires
(``ttl`` seconds, Redis's own clock, so hosts' clocks do not matter) and renews it while it
runs; a worker that dies stops renewing and drops out once the key expires. An index set lists
the names, pruned of entries whose key has expired when it is read. The CLI asks it which live
worker can run a step's task on the step's queue (``orchestrator.ops.waiting``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import redis

INDEX = "orch:workers"


def _key(name: str) -> str:
    return f"orch:worker:{name}"


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker: its node name, the queues it consumes and the tasks it registered."""

    name: str
    queues: tuple[str, ...]
    tasks: tuple[str, ...]
    concurrency: int | None
    pid: int
    started_at: float
    seen_at: float

    def consumes(self, queue: str) -> bool:
        return queue in self.queues

    def has(self, task: str) -> bool:
        return task in self.tasks


class WorkerRegistry:
    """The live workers' entries in one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> WorkerRegistry:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5))

    def publish(self, info: WorkerInfo, ttl: float) -> None:
        """Write or renew ``info`` for ``ttl`` seconds."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(_key(info.name), json.dumps(asdict(info)), px=int(ttl * 1000))
        pipe.sadd(INDEX, info.name)
        pipe.execute()

    def remove(self, name: str) -> None:
        """The worker stops: it is no longer live."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(_key(name))
        pipe.srem(INDEX, name)
        pipe.execute()

    def live(self) -> list[WorkerInfo]:
        """The workers whose entry has not expired, by name."""
        names = sorted(n.decode() for n in self.client.smembers(INDEX))  # type: ignore[union-attr]
        if not names:
            return []
        values: list[bytes | None] = self.client.mget([_key(n) for n in names])  # type: ignore[assignment]
        gone = [n for n, v in zip(names, values, strict=True) if v is None]
        if gone:
            self.client.srem(INDEX, *gone)
        return [_decode(v) for v in values if v is not None]


def _decode(raw: bytes) -> WorkerInfo:
    data: dict[str, Any] = json.loads(raw)
    return WorkerInfo(
        name=data["name"],
        queues=tuple(data.get("queues") or ()),
        tasks=tuple(data.get("tasks") or ()),
        concurrency=data.get("concurrency"),
        pid=int(data.get("pid") or 0),
        started_at=float(data.get("started_at") or 0),
        seen_at=float(data.get("seen_at") or 0),
    )
