"""Per-run state in Redis: control flag, step results, join sets and the completion signal.

Keys carry the run id in a hash tag (``orch:{<run>}:...``) so a run's keys share one cluster slot.
Joins use sets, not counters, so a redelivered step is counted once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import redis

from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import redact

INPUTS = "__inputs__"


def _key(run_id: str, part: str) -> str:
    return f"orch:{{{run_id}}}:{part}"


def done_channel(run_id: str) -> str:
    return f"orch:done:{run_id}"


class RunState:
    """Redis operations of the run lifecycle, one round trip each on the hot path."""

    def __init__(self, url: str, ttl: int) -> None:
        self.url = url
        self.ttl = ttl
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30
        )

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ServiceUnavailable(
                "Redis", redact(self.url), str(exc),
                "Start Redis or set ORCHESTRATOR_REDIS_URL / ORCHESTRATOR_RESULT_BACKEND",
            ) from exc

    def init_run(self, run_id: str, inputs: dict[str, Any], results: dict[str, Any]) -> None:
        """Store the inputs and the results a retried run starts from."""
        res = _key(run_id, "res")
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(res, mapping={INPUTS: json.dumps(inputs),
                                **{k: json.dumps(v) for k, v in results.items()}})
        pipe.expire(res, self.ttl)
        pipe.execute()

    def begin_step(self, run_id: str, parents: list[str]) -> tuple[str | None, list[Any]]:
        """The run's control flag and the parents' results (missing ones as ``None``)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(_key(run_id, "ctl"))
        if parents:
            pipe.hmget(_key(run_id, "res"), parents)
        replies = pipe.execute()
        flag = replies[0].decode() if replies[0] else None
        raw = replies[1] if parents else []
        return flag, [None if r is None else json.loads(r) for r in raw]

    def finish_step(
        self, run_id: str, step_id: str, result: Any, joins: list[int], sink: bool
    ) -> tuple[list[int], int | None]:
        """Record the result and count it toward joins and the run's end.

        Returns the join segments this call completed... as (sizes seen, sinks done) per join:
        the size of each join set after adding, with -1 where this step was already counted.
        """
        pipe = self.client.pipeline(transaction=True)
        res = _key(run_id, "res")
        pipe.hset(res, step_id, json.dumps(result))
        pipe.expire(res, self.ttl)
        for segment in [*joins, *(["sinks"] if sink else [])]:
            key = _key(run_id, f"join:{segment}")
            pipe.sadd(key, step_id)
            pipe.scard(key)
            pipe.expire(key, self.ttl)
        replies = pipe.execute()[2:]
        counts = [card if added else -1 for added, card in zip(replies[0::3], replies[1::3],
                                                              strict=True)]
        if sink:
            return counts[:-1], counts[-1]
        return counts, None

    def results(self, run_id: str, steps: list[str]) -> list[Any]:
        raw = self.client.hmget(_key(run_id, "res"), steps) if steps else []
        return [None if r is None else json.loads(r) for r in raw]

    def inputs(self, run_id: str) -> dict[str, Any]:
        raw = self.client.hget(_key(run_id, "res"), INPUTS)
        return {} if raw is None else dict(json.loads(raw))

    def set_flag(self, run_id: str, flag: str | None) -> None:
        key = _key(run_id, "ctl")
        if flag is None:
            self.client.delete(key)
        else:
            self.client.set(key, flag, ex=self.ttl)

    def flag(self, run_id: str) -> str | None:
        raw = self.client.get(_key(run_id, "ctl"))
        return raw.decode() if raw else None

    def notify_done(self, run_id: str, status: str) -> None:
        self.client.publish(done_channel(run_id), status)

    def watch_done(self, run_id: str, timeout: float, tick: float = 2.0) -> Iterator[bool]:
        """Yields True when the run's end is announced, False every ``tick`` seconds meanwhile.

        Subscribe first, then the caller checks PostgreSQL, so an end announced in between is
        still seen.
        """
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(done_channel(run_id))
            deadline = time.monotonic() + timeout
            yield False
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=min(tick, left))
                yield message is not None
        finally:
            pubsub.close()

    def drop_run(self, run_id: str, joins: int) -> None:
        keys = [_key(run_id, p) for p in ("ctl", "res")]
        keys += [_key(run_id, f"join:{i}") for i in [*range(joins), "sinks"]]
        self.client.delete(*keys)
