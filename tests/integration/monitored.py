"""Tasks of the monitoring tests (the metrics worker imports this module as well as workload)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis

from orchestrator import current_run, task

log = logging.getLogger(__name__)


@task
def pair(*args: Any, **kwargs: Any) -> int:
    """Logs, then waits until the other step of its pair runs too; returns this process's pid.

    Both steps of a pair finishing proves they ran at the same time in two pool processes.
    """
    log.info("step %s started; waiting for its pair", current_run.step_id)
    client = redis.Redis.from_url(os.environ["ORCHESTRATOR_REDIS_URL"])
    key = f"test:pair:{current_run.run_id}"
    client.incr(key)
    client.expire(key, 120)
    deadline = time.monotonic() + 20
    while int(client.get(key) or 0) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the other step of the pair never started")
        time.sleep(0.02)
    return os.getpid()
