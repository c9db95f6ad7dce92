"""How many messages wait in each broker queue, for ``orchestrator_queue_depth``.

The queues: the default queue, every queue a loaded workflow's steps name, and every queue a
live worker consumes. Each is asked with a passive declare on a channel of its own, which works
on both brokers: on Redis kombu sums the queue's lists, one per priority (``queue``,
``queue\\x06\\x161`` .. ``queue\\x06\\x169``: ``core.priorities``); on RabbitMQ the server
counts the queue's ready messages (not those delivered and unacknowledged). A queue that does
not exist yet (nothing was published to it) is not reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from kombu.exceptions import ChannelError

from orchestrator.core import registry
from orchestrator.ports import WorkerStore
from orchestrator.records import LOST_AFTER

log = logging.getLogger("orchestrator.metrics")


def known_queues(app: Any, workers: WorkerStore | None = None) -> list[str]:
    """The default queue, the queues of loaded workflows' steps and of live workers."""
    names = {str(app.conf.task_default_queue)}
    names |= {s.queue for w in registry.all_workflows() for s in w.steps if s.queue}
    if workers is not None:
        try:
            names |= {q for w in workers.workers(LOST_AFTER) if not w.lost for q in w.queues}
        except Exception as exc:  # Redis away: the queues known from the workflows remain
            log.warning("metrics: live workers unreadable: %s", type(exc).__name__)
    return sorted(names)


def queue_depths(app: Any, queues: Iterable[str]) -> list[tuple[str, int]]:
    """(queue, messages waiting) for each queue that exists, over one broker connection."""
    found = []
    with app.connection_for_write() as conn:
        for queue in queues:
            channel = conn.channel()
            try:
                declared = channel.queue_declare(queue=queue, passive=True)
                found.append((queue, int(declared.message_count)))
            except ChannelError:
                pass  # no such queue (RabbitMQ closes the channel: each queue has its own)
            finally:
                _close(channel)
    return found


def queue_source(
    app: Any, workers: WorkerStore | None = None
) -> Callable[[], list[tuple[str, int]]]:
    """What ``HistoryCollector(queues=...)`` calls at each scrape."""
    return lambda: queue_depths(app, known_queues(app, workers))


def _close(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the server closed already
        log.debug("metrics: channel already closed")
