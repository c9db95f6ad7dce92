"""What the console shows besides runs: dead letters, circuit breakers and workers.

There is no registry of workers yet: the workers page shows what Celery's remote control
(``inspect``) hears from the running workers within a second, and says so.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from orchestrator.engine.services import Services
from orchestrator.records import DeadLetterRecord

INSPECT_TIMEOUT = 1.0


class Breaker(BaseModel):
    name: str
    state: str
    failures: int
    total_failures: int
    successes: int
    changed: str | None
    """The last change, as ``closed -> open 12s ago``."""


class Worker(BaseModel):
    name: str
    pool: str | None
    concurrency: int | None
    queues: list[str]
    active: list[dict[str, Any]]


class Workers(BaseModel):
    source: str
    workers: list[Worker]


class Operations:
    """Dead letters, breakers and workers of one app."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def dead_letters(self, limit: int, include_replayed: bool) -> list[DeadLetterRecord]:
        return self.services.history.dead_letters(limit, include_replayed=include_replayed)

    def breakers(self) -> list[Breaker]:
        store = self.services.breakers
        found = []
        for name in store.names():
            state, last = store.get(name), store.history(name, 1)
            found.append(
                Breaker(
                    name=name,
                    state=state.state,
                    failures=state.failures,
                    total_failures=state.total_failures,
                    successes=state.successes,
                    changed=_ago(last[0]) if last else None,
                )
            )
        return found

    def workers(self) -> Workers:
        """The workers that answer Celery's ``inspect`` within a second."""
        inspect = self.services.app.control.inspect(timeout=INSPECT_TIMEOUT)
        stats = inspect.stats() or {}
        active = inspect.active() or {}
        queues = inspect.active_queues() or {}
        return Workers(
            source=f"celery inspect: the workers that answered within {INSPECT_TIMEOUT:g}s",
            workers=[
                Worker(
                    name=name,
                    pool=(stats.get(name) or {}).get("pool", {}).get("implementation"),
                    concurrency=(stats.get(name) or {}).get("pool", {}).get("max-concurrency"),
                    queues=[q.get("name", "?") for q in queues.get(name) or []],
                    active=list(active.get(name) or []),
                )
                for name in sorted({*stats, *active, *queues})
            ],
        )


def _ago(change: dict[str, Any]) -> str:
    return f"{change['from']} -> {change['to']} {time.time() - change['at']:.0f}s ago"
