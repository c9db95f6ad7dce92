"""Start-up checks of the Redis servers orchestrator keeps state in.

Per-run state (step results, join counters, control flags), breakers and delayed messages live in
Redis with TTLs. Under a ``volatile-*`` or ``allkeys-*`` ``maxmemory-policy`` a Redis that reaches
``maxmemory`` evicts keys silently: a parent's result or a join disappears and the run never
finishes (a broker on such a Redis can lose messages too). Only ``noeviction`` is safe: writes then
fail loudly instead. A worker checks once when it is ready (``orchestrator.worker``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from orchestrator.settings import Settings, redact

log = logging.getLogger("orchestrator")
SAFE_POLICY = "noeviction"
POLICY = "maxmemory-policy"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def eviction_warning(policy: str | None, url: str, roles: str) -> str | None:
    """The warning for a Redis with this ``maxmemory-policy``; None if it is safe or unknown."""
    if policy is None or policy == SAFE_POLICY:
        return None
    return (
        f"Redis at {redact(url)} ({roles}) has {POLICY} {policy!r}: at maxmemory it may evict "
        "run state (step results, joins) and leave runs unfinished. Set "
        f"`{POLICY} {SAFE_POLICY}` in redis.conf (or CONFIG SET {POLICY} {SAFE_POLICY}) "
        "and give it enough maxmemory for the runs in flight"
    )


def maxmemory_policy(client: Any) -> str | None:
    """The server's ``maxmemory-policy``; None when it cannot be read (CONFIG disabled,
    renamed or denied, as on managed services, or the server is away): logged at debug."""
    try:
        reply = client.config_get(POLICY)
    except redis.RedisError as exc:
        log.debug("cannot read Redis %s (%s); eviction policy not checked", POLICY, exc)
        return None
    value = reply.get(POLICY, reply.get(POLICY.encode())) if isinstance(reply, dict) else None
    if isinstance(value, bytes):
        return value.decode()
    return None if value is None else str(value)


def redis_roles(settings: Settings) -> dict[str, list[str]]:
    """Each Redis URL the settings name, with what it holds there."""
    found: dict[str, list[str]] = {}
    named = (
        ("run state", settings.state_url),
        ("result backend", settings.backend_url),
        ("broker", settings.broker_url),
    )
    for role, url in named:
        if url.startswith(REDIS_SCHEMES):
            found.setdefault(url, []).append(role)
    return found


def check_eviction_policies(
    settings: Settings, connect: Callable[..., Any] = redis.Redis.from_url
) -> list[str]:
    """Log a warning for each Redis whose ``maxmemory-policy`` may evict keys; the warnings."""
    warnings: list[str] = []
    for url, roles in redis_roles(settings).items():
        client = connect(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            warning = eviction_warning(maxmemory_policy(client), url, ", ".join(roles))
        finally:
            client.close()
        if warning is not None:
            log.warning(warning)
            warnings.append(warning)
    return warnings
