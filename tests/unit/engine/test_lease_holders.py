"""Which lapsed-looking leases a worker takes at once: those of its own dead pool processes, never
those of another worker that was given the same node name (``engine.leases``)."""

from __future__ import annotations

import os
import subprocess
import sys

from orchestrator.engine.leases import WORKER_TAG, holder_is_dead, lease_owner


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_a_dead_pool_process_of_this_worker_is_taken_over_at_once() -> None:
    holder = f"w@host:{_dead_pid()}:{WORKER_TAG}-abcd1234"
    assert holder_is_dead(holder, "w@host")


def test_a_worker_of_the_same_node_name_elsewhere_is_never_taken_for_dead() -> None:
    # its pid means nothing here (no such process on this machine): still not ours to take
    holder = f"w@host:{_dead_pid()}:0000ffff-abcd1234"
    assert not holder_is_dead(holder, "w@host")
    assert not holder_is_dead(f"w@host:{_dead_pid()}:abcd1234", "w@host")  # no worker tag


def test_live_holders_and_other_nodes_are_not_taken() -> None:
    assert not holder_is_dead(lease_owner("w@host"), "w@host")  # this very process
    assert not holder_is_dead(f"w@host:{os.getppid()}:{WORKER_TAG}-x", "w@host")  # alive
    assert not holder_is_dead(f"w@other:{_dead_pid()}:{WORKER_TAG}-x", "w@host")
    assert lease_owner("w@host").startswith(f"w@host:{os.getpid()}:{WORKER_TAG}-")
