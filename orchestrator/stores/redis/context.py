"""Each run's context in Redis: a hash of JSON values, one field per key (the ``RunContextStore``
port).

A ``set`` is one Lua script: it checks the bound (the context's size in bytes, keys and values,
after the change), writes the field, and gives the change a *version* that only grows (Redis's
clock in microseconds, or the last version + 1 if that is not larger), so history keeps the latest
context whatever order several workers' events reach PostgreSQL in, also after Redis lost the hash
(a restart without persistence): a later change still outranks what history holds. Two steps
setting different keys at once both land (each script sees the other's field). The hash and its
version expire ``ttl`` seconds after the last change; history keeps the context after that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis

from orchestrator.stores.redis.reachability import unavailable
from orchestrator.stores.redis.run_keys import key

T = TypeVar("T")

# KEYS: the hash, its version; ARGV: field, value, max bytes, ttl ms
# -> {version, size, field, value, ...} or {-1, size} when the bound refuses the change
SET = """
local size = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= ARGV[1] then size = size + #all[i] + #all[i + 1] end
end
size = size + #ARGV[1] + #ARGV[2]
if size > tonumber(ARGV[3]) then return {-1, size} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local version = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') + 1, now)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], string.format('%d', version), 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local out = {version, size}
all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do out[#out + 1] = all[i] end
return out
"""


class RedisRunContext:
    """Run contexts in one Redis (the run state's connections)."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl
        self._set = client.register_script(SET)

    def set(
        self, run_id: str, key_: str, encoded: str, max_bytes: int
    ) -> tuple[int, dict[str, str]] | None:
        """Set one key; the new version and the whole context, or None (nothing written) if
        the context would grow past ``max_bytes``."""
        keys = [key(run_id, "ctx"), key(run_id, "ctxv")]
        out = self._call(keys, [key_, encoded, max_bytes, self.ttl * 1000])
        version = int(out[0])
        if version < 0:
            return None
        flat = [x.decode() if isinstance(x, bytes) else str(x) for x in out[2:]]
        return version, dict(zip(flat[0::2], flat[1::2], strict=True))

    def get(self, run_id: str, key_: str) -> str | None:
        raw = self._guard(lambda: self.client.hget(key(run_id, "ctx"), key_))
        return raw.decode() if isinstance(raw, bytes) else None

    def values(self, run_id: str) -> dict[str, str] | None:
        """The whole context; None when Redis holds none for the run (never set, or expired)."""
        found = self._guard(lambda: self.client.hgetall(key(run_id, "ctx")))
        raw = cast(dict[bytes, bytes], found)
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    def _call(self, keys: list[str], args: list[Any]) -> list[Any]:
        return list(self._guard(lambda: self._set(keys=keys, args=args)))

    def _guard(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except redis.RedisError as exc:
            raise unavailable(self.client, exc) from exc
