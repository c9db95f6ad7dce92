"""A worker survives a Redis restart: a guard around kombu's Redis transport.

When the broker connection drops, Celery closes the old connection; kombu's Redis channel then
restores its unacknowledged messages through a connection pool it builds from
``connection.client`` — which the close has already cleared. The ``AttributeError`` that
follows ends the worker ("Unrecoverable error: 'NoneType' object has no attribute 'hostname'";
kombu #970, #582; seen in the fault suite on Redis restarts). With no connection left to build a
pool from, those messages stay in Redis's unacked set, from which Redis restores them after the
visibility timeout; the reconciler recovers their runs sooner. The worker goes on and reconnects.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("orchestrator")
_original: Any = kombu_redis.QoS.restore_unacked


def restore_unacked(self: Any, client: Any = None) -> Any:
    """kombu's ``QoS.restore_unacked``, unless the channel can no longer reach Redis."""
    channel = self.channel
    if client is None and channel._pool is None and channel.connection.client is None:
        log.warning(
            "%d unacknowledged message(s) left in Redis: the broker connection closed before "
            "they could be restored now; Redis restores them after the visibility timeout",
            len(self._delivered),
        )
        return None
    return _original(self, client)


def install() -> None:
    """Install the guard (idempotent)."""
    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]
