"""Concurrency slots in Redis (the ``SlotStore`` port): who holds a slot, who waits in line.

Per slot name (``core.concurrency.slot_name``: a workflow and a key) three keys: a sorted set
of the runs holding a slot (scored by when they got it, so the oldest comes first), a sorted
set of the runs waiting (scored by when they asked: submit order), and the limit last asked
with. Every change is one Lua script, atomic and one round trip, so 50 concurrent submits for
one key never put more than the limit in the first set. Times come from the Redis server's
clock (``TIME``), the one clock every submitter shares.

A set of every slot name in use lets the reconciler find holders whose run has ended (a leak),
and a marker key (``orch:cc:intact``) that only a repair sets tells it when Redis lost the
state (a restart without persistence): then it rebuilds the holders from PostgreSQL.
"""

from __future__ import annotations

from typing import cast

import redis

from orchestrator.core.concurrency import Admission
from orchestrator.stores.redis.run_keys import text

PREFIX = "orch:cc:"

_HELPERS = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- waiting runs take the free slots, in line order; returns them
local function promote(held, wait, limit)
  local out = {}
  while redis.call('ZCARD', held) < limit do
    local head = redis.call('ZPOPMIN', wait)
    if #head == 0 then break end
    redis.call('ZADD', held, now(), head[1])
    table.insert(out, head[1])
  end
  return out
end
"""

ACQUIRE = (
    _HELPERS
    + """
-- KEYS: held, wait, max, index   ARGV: run, limit, on_limit, slot name
-- returns: outcome, position, held, number evicted, evicted..., promoted...
local run, limit, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
redis.call('SET', KEYS[3], limit)
redis.call('SADD', KEYS[4], ARGV[4])
local promoted = promote(KEYS[1], KEYS[2], limit)
local outcome, position, evicted = 'started', 0, {}
if not redis.call('ZSCORE', KEYS[1], run) then
  local rank = redis.call('ZRANK', KEYS[2], run)
  if rank then
    outcome, position = 'queued', rank + 1
  elseif redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now(), run)
  elseif mode == 'queue' then
    redis.call('ZADD', KEYS[2], now(), run)
    outcome, position = 'queued', redis.call('ZCARD', KEYS[2])
  elseif mode == 'cancel_newest' then
    outcome = 'rejected'
  else
    while redis.call('ZCARD', KEYS[1]) >= limit do
      table.insert(evicted, redis.call('ZPOPMIN', KEYS[1])[1])
    end
    redis.call('ZADD', KEYS[1], now(), run)
  end
end
local out = {outcome, position, redis.call('ZCARD', KEYS[1]), #evicted}
for _, r in ipairs(evicted) do table.insert(out, r) end
for _, r in ipairs(promoted) do table.insert(out, r) end
return out
"""
)

RELEASE = (
    _HELPERS
    + """
-- KEYS: held, wait, max, index   ARGV: run, slot name
-- frees the run's slot (or its place in line); returns the waiting runs that got a slot
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local out = promote(KEYS[1], KEYS[2], tonumber(redis.call('GET', KEYS[3]) or '0'))
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[2])
end
return out
"""
)

HOLD = (
    _HELPERS
    + """
-- KEYS: held, wait, max, index   ARGV: run, limit, slot name
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'NX', now(), ARGV[1])
if not redis.call('GET', KEYS[3]) then redis.call('SET', KEYS[3], ARGV[2]) end
redis.call('SADD', KEYS[4], ARGV[3])
return 1
"""
)


class RedisSlots:
    """Concurrency slots shared by every process and host through Redis."""

    def __init__(self, client: redis.Redis, prefix: str = PREFIX) -> None:
        self.client = client
        self.prefix = prefix  # another prefix keeps a test's slots apart from the workers'
        self._index, self._intact = f"{prefix}slots", f"{prefix}intact"
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self._hold = client.register_script(HOLD)

    def _keys(self, slot: str) -> list[str]:
        tag = f"{self.prefix}{{{slot}}}"
        return [f"{tag}:held", f"{tag}:wait", f"{tag}:max", self._index]

    def acquire(self, slot: str, run_id: str, limit: int, on_limit: str) -> Admission:
        reply = self._acquire(keys=self._keys(slot), args=[run_id, limit, on_limit, slot])
        evicted = int(reply[3])
        rest = [text(r) for r in reply[4:]]
        return Admission(
            outcome=text(reply[0]),
            position=int(reply[1]),
            held=int(reply[2]),
            evicted=tuple(rest[:evicted]),
            promoted=tuple(r for r in rest[evicted:] if r != run_id),
        )

    def release(self, slot: str, run_id: str) -> list[str]:
        return [text(r) for r in self._release(keys=self._keys(slot), args=[run_id, slot])]

    def hold(self, slot: str, run_id: str, limit: int) -> None:
        self._hold(keys=self._keys(slot), args=[run_id, limit, slot])

    def where(self, slot: str, run_id: str) -> tuple[str | None, int, int, int]:
        held, wait, limit, _ = self._keys(slot)
        pipe = self.client.pipeline(transaction=False)
        pipe.zscore(held, run_id)
        pipe.zrank(wait, run_id)
        pipe.zcard(held)
        pipe.get(limit)
        score, rank, count, most = pipe.execute()
        state = "held" if score is not None else "waiting" if rank is not None else None
        position = 0 if rank is None else int(rank) + 1
        return state, position, int(count), int(most or 0)

    def line(self, slot: str) -> tuple[list[str], list[str]]:
        held, wait, _, _ = self._keys(slot)
        pipe = self.client.pipeline(transaction=False)
        pipe.zrange(held, 0, -1)
        pipe.zrange(wait, 0, -1)
        holders, waiting = pipe.execute()
        return [text(r) for r in holders], [text(r) for r in waiting]

    def held_since(self, slot: str, before: float) -> list[str]:
        held = self._keys(slot)[0]
        found = self.client.zrangebyscore(held, "-inf", f"({before}")
        return [text(cast(bytes, r)) for r in found]

    def slots(self) -> list[str]:
        return sorted(text(s) for s in self.client.smembers(self._index))

    def intact(self) -> bool:
        return bool(self.client.exists(self._intact))

    def mark_intact(self) -> None:
        self.client.set(self._intact, "1")
