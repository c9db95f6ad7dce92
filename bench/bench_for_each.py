"""A ``for_each`` of 10,000 items vs raw Celery's ``group`` of the same tasks, on the same worker.

Run ``python bench/bench_for_each.py [--items N]`` from the project root (PostgreSQL and Redis on
127.0.0.1; the services, the database and the worker are those of ``bench/bench_canvas.py``).
The raw side is ``group(noop.si(i) for i in range(N))``, waited on as ``bench_canvas`` waits;
the workflow is ``numbers -> noop for_each numbers``, from ``run_workflow`` until ``wait()``
returns the list of N results. Then, with a second worker that logs every published message,
the largest broker message of a fan-out of 100 items and of N items (it must not grow with N:
items are fetched by index, never carried).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench.bench_canvas import (  # noqa: E402  (after the path is set)
    REDIS_URL,
    WAIT_TIMEOUT,
    run_raw,
    running_worker,
    setup_services,
    tasks_module,
    teardown_services,
)


def raw_group(n: int) -> Any:
    from celery import group

    noop = tasks_module().noop
    return group(noop.si(i) for i in range(n))


def fan_out_spec(n: int) -> Any:
    from orchestrator import Workflow

    tasks = tasks_module()
    wf = Workflow(f"bench-for-each-{n}").step("list", tasks.numbers)
    return wf.step("each", tasks.noop, for_each="list", max_items=n).spec


def run_fan_out(n: int) -> float:
    from orchestrator import run_workflow

    started = time.perf_counter()
    output = run_workflow(fan_out_spec(n), {"count": n}).wait(timeout=WAIT_TIMEOUT * 4)
    assert output == [None] * n
    return time.perf_counter() - started


def largest_message(n: int) -> int:
    import redis

    from bench.tasks import PUBLISHED_KEY

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(PUBLISHED_KEY)
    run_fan_out(n)
    return max(json.loads(entry)[1] for entry in client.lrange(PUBLISHED_KEY, 0, -1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    n = parser.parse_args(argv).items
    setup_services()
    logs = Path(tempfile.mkdtemp(prefix="bench-for-each-"))
    try:
        with running_worker(logs / "worker.log"):
            raw = run_raw(lambda: raw_group(n))
            orch = run_fan_out(n)
        from bench.tasks import PUBLISH_LOG_ENV

        with running_worker(logs / "logged.log", {PUBLISH_LOG_ENV: REDIS_URL}):
            os.environ[PUBLISH_LOG_ENV] = REDIS_URL  # this process publishes too
            sizes = {100: largest_message(100), n: largest_message(n)}
    finally:
        teardown_services()
    print(f"{n} items: raw group {raw:.1f}s, for_each {orch:.1f}s, for_each/raw {orch / raw:.2f}")
    print(f"largest message: {sizes[100]} B with 100 items, {sizes[n]} B with {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
