"""A worker survives a Redis restart: a guard in kombu's Redis transport.

When the broker connection drops, Celery closes the old connection while kombu's Redis channel
still has work to do with it: restore its unacknowledged messages, acknowledge a task that just
finished. Both build a connection pool from ``connection.client``, which the close has already
cleared, and the ``AttributeError`` that follows ends the worker ("Unrecoverable error:
'NoneType' object has no attribute 'hostname'" or "... 'client'"; kombu #970, #582; seen in the
fault suite on Redis restarts). The guard turns it into the connection error it is, which Celery
handles: the worker reconnects, and the messages it could not restore or acknowledge stay in
Redis's unacked set, which Redis restores after the visibility timeout (a claim makes the copy
of a finished step a no-op; the reconciler recovers the runs sooner).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger("orchestrator")
_original: Any = kombu_redis.Channel._connparams


def connparams(self: Any, asynchronous: bool = False) -> Any:
    """kombu's ``Channel._connparams``, or a connection error once the connection is gone."""
    transport = self.connection
    if transport is None or transport.client is None:
        log.warning("the broker connection was closed under a Redis channel; reconnecting")
        raise redis.exceptions.ConnectionError("the broker connection was closed")
    return _original(self, asynchronous)


def install() -> None:
    """Install the guard (idempotent)."""
    kombu_redis.Channel._connparams = connparams  # type: ignore[method-assign]
