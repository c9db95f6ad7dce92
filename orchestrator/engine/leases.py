"""Leases: a running step's hold on its attempt, renewed while it runs, and taken over from a
pool process that died.

A delivery claims ``(run, step, attempt)`` with a lease that expires unless renewed; the
:class:`LeaseKeeper` thread of each process renews the leases of the steps running there. A lease
held by a dead pool process of the same worker is stolen at once (:func:`holder_is_dead`); any
other lapsed lease is the reconciler's to recover.

A holder is ``node:pid:token``; the token starts with :data:`WORKER_TAG`, made when this module
is imported in a worker's main process, so the pool processes it forks share it and no other
worker has it. Two workers given the same node name on different machines (``-n w@localhost``,
containers with one host name) thus never take each other's live leases for those of dead local
processes.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

from orchestrator.ports import RunStateStore
from orchestrator.records import Lease

WORKER_TAG = uuid.uuid4().hex[:8]
"""This worker's part of its lease holders' tokens (shared by the pool processes it forks)."""


def lease_owner(hostname: str) -> str:
    """A new holder name for a delivery of this process: ``node:pid:<worker tag>-<random>``."""
    return f"{hostname}:{os.getpid()}:{WORKER_TAG}-{uuid.uuid4().hex[:8]}"


def holder_is_dead(holder: str | None, hostname: str) -> bool:
    """Whether a lease ``holder`` (``host:pid:token``) is a pool process of this worker that is
    gone: one the worker replaced after it was killed mid-step."""
    parts = (holder or "").rsplit(":", 2)
    if len(parts) != 3 or not hostname or parts[0] != hostname or not parts[1].isdigit():
        return False
    if not parts[2].startswith(f"{WORKER_TAG}-"):
        return False  # another worker's (one of the same node name elsewhere, or before)
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # a thread of this process (threads pool) may hold it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseKeeper:
    """Keeps the leases of the steps running in this process alive (a thread per process)."""

    def __init__(self, state: Callable[[], RunStateStore], lease_seconds: float) -> None:
        self._state = state
        self._lease_seconds = lease_seconds
        self._leases: dict[Lease, str] = {}
        self._lock = threading.Lock()
        self._pid = 0
        self._closed = threading.Event()

    def keep(self, lease: Lease, owner: str) -> None:
        with self._lock:
            self._leases[lease] = owner
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(
                    target=self._renew, name="orchestrator-leases", daemon=True
                ).start()

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(lease, None)

    def close(self) -> None:
        """Stop renewing, for services that are discarded (``orchestrator.testing``)."""
        self._closed.set()

    def _renew(self) -> None:
        period = self._lease_seconds / 3
        while not self._closed.wait(period):
            # held during the call: a lease dropped meanwhile must not be re-created after its
            # step released it (renewal re-creates a lease that Redis lost)
            with self._lock:
                try:
                    self._state().renew(dict(self._leases), int(self._lease_seconds * 1000))
                except Exception:  # Redis away: renewed (re-created) once it is back
                    continue
