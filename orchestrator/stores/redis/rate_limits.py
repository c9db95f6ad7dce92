"""Rate limits shared by every worker: a sorted set of start times per key, in Redis.

One Lua script decides a start (:data:`ACQUIRE`): it drops the starts that left the window,
then either adds this start or, the window being full, answers how long until it has room,
and counts the deferral. It is the rule of :func:`orchestrator.core.rate_limits.slide`, run
atomically, so two workers never both take the last slot. The time is Redis's own (``TIME``),
so workers on hosts whose clocks differ count one window.
"""

from __future__ import annotations

import time

import redis

PREFIX = "orch:ratelimit:"
DEFERRALS = "orch:ratelimit-deferrals"
"""A hash: deferrals counted per key since Redis's data began (the metric's source)."""

# KEYS: the key's starts; the deferral counts.  ARGV: limit, period (s), member, key
# returns {1, "0"} when the start is counted, else {0, seconds to wait}
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
-- times as '%.6f': a Lua number passed to Redis as it is keeps only 14 digits (0.1 ms)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - period))
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period * 1000) + 1000)
  return {1, '0'}
end
local frees = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
return {0, string.format('%.6f', math.max(tonumber(frees[2]) + period - now, 1e-6))}
"""

# KEYS: the key's starts.  ARGV: limit, period (s). Returns the seconds until a start may go.
PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local starts = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now - period),
  '+inf', 'WITHSCORES')
local count = #starts / 2
if count < limit then return '0' end
return string.format('%.6f', math.max(tonumber(starts[2 * (count - limit) + 2]) + period - now,
  1e-6))
"""


class RedisRateLimits:
    """Sliding windows of step starts per key, shared by every process and host."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._acquire = client.register_script(ACQUIRE)
        self._peek = client.register_script(PEEK)

    def acquire(self, key: str, limit: int, period: float, member: str) -> float:
        """Count a start now (0.0), or the seconds until one is allowed (a deferral)."""
        admitted, wait = self._acquire(
            keys=[PREFIX + key, DEFERRALS], args=[limit, repr(period), member, key]
        )
        return 0.0 if int(admitted) else float(wait)

    def release(self, key: str, member: str) -> None:
        """Take back a counted start whose function was not called after all."""
        self.client.zrem(PREFIX + key, member)

    def next_start(self, key: str, limit: int, period: float) -> float:
        """When a start would be allowed (epoch seconds, by this host's clock)."""
        return time.time() + float(self._peek(keys=[PREFIX + key], args=[limit, repr(period)]))

    def deferrals(self) -> dict[str, int]:
        """Deferrals counted per key."""
        raw: dict[bytes, bytes] = self.client.hgetall(DEFERRALS)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}
