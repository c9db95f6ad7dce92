"""The error a Redis adapter raises when Redis cannot be reached: ``ServiceUnavailable``,
naming the server (without credentials) and what to do."""

from __future__ import annotations

import redis

from orchestrator.errors import ServiceUnavailable


def unavailable(client: redis.Redis, exc: Exception) -> ServiceUnavailable:
    """``exc`` (a ``redis.RedisError``) of ``client`` as the framework's error."""
    kwargs = client.connection_pool.connection_kwargs
    secret = kwargs.get("password")
    user = f"{kwargs.get('username') or ''}:***@" if secret else ""
    host = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
    where = f"redis://{user}{host}/{kwargs.get('db', 0)}"
    return ServiceUnavailable(
        "Redis", where, str(exc), "Start Redis or check ORCHESTRATOR_REDIS_URL"
    )
