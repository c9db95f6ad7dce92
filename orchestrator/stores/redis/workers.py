"""The registry of workers in Redis (the ``WorkerStore`` port): each worker's heartbeat.

A worker's main process writes its entry (:class:`~orchestrator.records.WorkerInfo`: queues,
tasks, concurrency, the steps it runs) under a key that expires ``keep`` seconds after the last
write, and renews it every few seconds while it runs. A reader measures how long each worker has
been silent by the key's remaining time to live, i.e. by Redis's own clock, so hosts' clocks do
not matter: silent for longer than ``lost_after`` it is listed ``lost``; once the key expires it
is dropped. An index set lists the names, pruned of entries whose key has expired when it is read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import Any

import redis

from orchestrator.records import WorkerInfo
from orchestrator.stores.redis.reachability import unavailable

INDEX = "orch:workers"
__all__ = ["INDEX", "WorkerInfo", "WorkerRegistry"]


def _key(name: str) -> str:
    return f"orch:worker:{name}"


class WorkerRegistry:
    """The workers' entries in one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> WorkerRegistry:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5))

    def publish(self, info: WorkerInfo, keep: float) -> None:
        """Write or renew ``info``, kept ``keep`` seconds unless written again."""
        entry = {**asdict(info), "keep": keep}
        pipe = self.client.pipeline(transaction=False)
        pipe.set(_key(info.name), json.dumps(entry), px=int(keep * 1000))
        pipe.sadd(INDEX, info.name)
        self._run(pipe)

    def remove(self, name: str) -> None:
        """The worker stops: it is no longer listed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(_key(name))
        pipe.srem(INDEX, name)
        self._run(pipe)

    def workers(self, lost_after: float) -> list[WorkerInfo]:
        """Every worker whose entry has not expired, by name; ``lost`` when silent for longer
        than ``lost_after`` seconds."""
        try:
            names = sorted(n.decode() for n in self.client.smembers(INDEX))  # type: ignore[union-attr]
        except redis.RedisError as exc:
            raise unavailable(self.client, exc) from exc
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(_key(name))
            pipe.pttl(_key(name))
        replies = self._run(pipe)
        found, gone = [], []
        for name, raw, left in zip(names, replies[0::2], replies[1::2], strict=True):
            if raw is None:
                gone.append(name)
                continue
            found.append(_decode(raw, left, lost_after))
        if gone:
            self._run(self.client.pipeline(transaction=False).srem(INDEX, *gone))
        return found

    def live(self, lost_after: float = float("inf")) -> list[WorkerInfo]:
        """The workers that are not lost."""
        return [w for w in self.workers(lost_after) if not w.lost]

    def _run(self, pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except redis.RedisError as exc:
            raise unavailable(self.client, exc) from exc


def _decode(raw: bytes, left_ms: int, lost_after: float) -> WorkerInfo:
    data: dict[str, Any] = json.loads(raw)
    keep = float(data.get("keep") or 0)
    silent = max(0.0, keep - max(0, int(left_ms)) / 1000) if keep else 0.0
    info = WorkerInfo(
        name=data["name"],
        queues=tuple(data.get("queues") or ()),
        tasks=tuple(data.get("tasks") or ()),
        concurrency=data.get("concurrency"),
        pid=int(data.get("pid") or 0),
        started_at=float(data.get("started_at") or 0),
        seen_at=float(data.get("seen_at") or 0),
        running=tuple((str(r[0]), str(r[1])) for r in data.get("running") or ()),
    )
    return replace(info, lost=silent > lost_after, silent_for=round(silent, 3))
