"""Priorities of runs and steps: 0 (lowest) to 9 (highest), and the number the broker is given.

A run's priority (``run_workflow(..., priority=9)``) applies to each of its steps; a step's own
``priority`` option wins over it. A message with no priority is priority 0 (``DEFAULT``), as
RabbitMQ treats it. Priorities order the messages that wait in one queue; they never preempt a
step that runs, and a worker's prefetched messages are already out of the queue.

The brokers read the number the other way round from each other:

- **RabbitMQ** (AMQP): a higher number is delivered first, and only from a queue declared with
  ``x-max-priority`` (``task_queue_max_priority``); ours is given as it is.
- **Redis** (kombu's transport, 5.x): a message goes to one list per *priority step*
  (``queue``, ``queue\\x06\\x161`` .. ``queue\\x06\\x169`` with steps 0..9) and a worker pops the
  lists in step order, so the *lowest* number is delivered first. Ours is given as ``9 - p``.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import PriorityError

LOWEST = 0
HIGHEST = 9
DEFAULT = LOWEST
REDIS_PRIORITY_STEPS = list(range(LOWEST, HIGHEST + 1))
"""kombu's Redis priority steps: one list per priority (kombu's default is [0, 3, 6, 9])."""
REDIS_SCHEMES = ("redis", "rediss", "sentinel", "unix", "socket")


def check_priority(value: Any, workflow: str, step: str | None = None) -> int | None:
    """``value`` as a priority (None: not given); a ``PriorityError`` naming the workflow (and
    step) for anything but a whole number from 0 to 9."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not LOWEST <= value <= HIGHEST:
        raise PriorityError(
            workflow,
            f"priority {value!r} is not a whole number from {LOWEST} (lowest) to {HIGHEST} "
            "(highest)",
            step,
        )
    return value


def effective(step_priority: int | None, run_priority: int | None) -> int:
    """A step's priority: its own, else its run's, else :data:`DEFAULT`."""
    if step_priority is not None:
        return step_priority
    return DEFAULT if run_priority is None else run_priority


def reversed_by(broker_url: str | None) -> bool:
    """Whether the broker at ``broker_url`` delivers low numbers first (Redis)."""
    scheme = (broker_url or "").split(";", 1)[0].split("://", 1)[0].split("+", 1)[0]
    return scheme.strip().lower() in REDIS_SCHEMES


def broker_priority(priority: int, reverse: bool) -> int:
    """The number to publish a message of ``priority`` with (``reverse``: on Redis)."""
    return HIGHEST - priority if reverse else priority


def redis_list(queue: str, priority: int, sep: str = "\x06\x16") -> str:
    """The Redis list kombu keeps a queue's messages of ``priority`` in."""
    step = broker_priority(priority, True)
    return f"{queue}{sep}{step}" if step else queue
