"""A plain Celery app, the baseline a Celery user runs today: Celery's own defaults.

No late acks, the default prefetch multiplier (4), no task events, no ``task_track_started``, no
``result_extended``; JSON (Celery's default serializer); Redis as broker and result backend at
``BENCH_PLAIN_REDIS_URL`` (db 11 unless told). The one change from a bare ``Celery()`` is the
queue name, ``bench-plain``, so that this app's worker and the orchestrator's worker can share a
Redis db without taking each other's messages. Start its worker with
``celery -A bench.plain_app worker -c 2`` (``bench/bench_baselines.py`` does).

With ``BENCH_PROFILE`` set, ``profile_start``/``profile_stop`` switch cProfile on and off in a
``--pool solo`` worker (``bench/profiling.py``).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench import profiling

REDIS_URL = os.environ.get("BENCH_PLAIN_REDIS_URL", "redis://127.0.0.1:6379/15")

app = Celery("bench_plain", broker=REDIS_URL, backend=REDIS_URL)
app.conf.task_default_queue = "bench-plain"


@app.task(name="bench.plain.noop")
def noop(*args: Any, **kwargs: Any) -> None:
    """Does nothing, like ``bench.tasks.noop``."""
    return None


@app.task(name="bench.plain.profile_start")
def profile_start() -> None:
    """Switch cProfile on in this (solo) worker process."""
    if os.environ.get(profiling.PROFILE_ENV):
        profiling.start()


@app.task(name="bench.plain.profile_stop")
def profile_stop(path: str) -> None:
    """Switch cProfile off and write it to ``path``."""
    if os.environ.get(profiling.PROFILE_ENV):
        profiling.stop(path)
