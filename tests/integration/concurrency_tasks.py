"""Tasks and workflows of the concurrency-limit tests (``test_concurrency``); their workers
import this module. Steps go to a queue of their own (:data:`QUEUE`), which only those
workers consume."""

from __future__ import annotations

import json
import os
import time

import redis

from orchestrator import Workflow, current_run, task

QUEUE = "concurrency"


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])


@task
def span(tenant: str, n: int, log: str, ms: int = 200) -> int:
    """Hold the worker for ``ms`` and note when this run's step started and ended."""
    started = time.time()
    time.sleep(ms / 1000)
    entry = {"run": current_run.run_id, "tenant": tenant, "n": n, "start": started}
    _redis().rpush(log, json.dumps({**entry, "end": time.time()}))
    return n


def limited(name: str, max_runs: int, on_limit: str = "queue", key: str | None = None) -> Workflow:
    """A one-step workflow with a concurrency limit."""
    cc = {"max_runs": max_runs, "key": key, "on_limit": on_limit}
    return Workflow(name, concurrency=cc).step("hold", span, queue=QUEUE)


PER_TENANT = limited("cc_per_tenant", 2, key="inputs.tenant")
ONE_AT_A_TIME = limited("cc_one_at_a_time", 1)
NEWEST = limited("cc_newest", 1, "cancel_newest")
OLDEST = limited("cc_oldest", 1, "cancel_oldest")
RACE = limited("cc_race", 2, key="inputs.tenant")
