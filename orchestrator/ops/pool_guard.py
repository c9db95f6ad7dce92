"""A worker survives a pool process that exits while the broker connection restarts: a guard in
Celery's prefork pool.

When the consumer restarts (the broker came back after an outage) it registers the pool with
the event loop again, tracking each pool process by a duplicate of its sentinel. A process that
exited moments before (killed at its hard time limit, say) was untracked: its duplicate is
``None``. Celery passes it on; kombu refuses it with ``ValueError('file descriptor is None')``,
which Celery's ``iterate_file_descriptors_safely`` does not catch in this release (kombu expects
it to), and the whole worker stops ("Unrecoverable error"; seen in the fault suite's chaos test:
a Redis outage while a step hit its hard time limit). The guard skips such a process: the pool
replaces it, and its replacement is tracked when it starts.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency.asynpool import AsynPool

_original: Any = AsynPool._track_child_process


def track_child_process(self: Any, proc: Any, hub: Any) -> None:
    """Celery's ``AsynPool._track_child_process``, except for a process already untracked."""
    if getattr(proc, "_sentinel_poll", 0) is None:
        return  # it exited and was untracked: nothing to watch
    _original(self, proc, hub)


def install() -> None:
    """Install the guard (idempotent)."""
    AsynPool._track_child_process = track_child_process
