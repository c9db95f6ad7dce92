"""Where a run's state lives in Redis: key names, hash fields and the completion channel.

Keys carry the run id in a hash tag (``orch:{<run>}:...``) so a run's keys share one cluster slot
and one Lua script may touch all of them.
"""

from __future__ import annotations

INPUTS = "__inputs__"
"""The field of the result hash that holds the run's inputs."""
SINKS = "sinks"
"""The join set that counts the run's finished sinks."""
PUBLISHING = "orch:publishing"
"""The runs being published by their submitter (a sorted set, scored by when each was noted)."""


def text(value: bytes | str) -> str:
    """A string Redis replied with (bytes, unless the client decodes replies)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def key(run_id: str, part: str) -> str:
    """The key of ``part`` of the run: ``ctl``, ``res``, ``deliveries``, ``join:<step>``..."""
    return f"orch:{{{run_id}}}:{part}"


def lease_key(run_id: str, step_id: str, attempt: int) -> str:
    """The lease of one attempt of a step: its value is the owner executing it."""
    return key(run_id, f"lease:{step_id}:{attempt}")


def retry_key(run_id: str, step_id: str, attempt: int) -> str:
    """The noted message of a step's next attempt, until a delivery of it is claimed."""
    return key(run_id, f"retry:{step_id}:{attempt}")


def done_channel(run_id: str) -> str:
    """The pub/sub channel on which the run's end is announced."""
    return f"orch:done:{run_id}"
