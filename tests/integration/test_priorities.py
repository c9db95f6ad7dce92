"""Priorities, queue timeouts and queue depth on real workers, Redis, PostgreSQL and RabbitMQ.

Each test routes its steps to a queue of its own, so the session's other workers never take them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange
from kombu import Queue as KombuQueue
from sqlalchemy import create_engine

from orchestrator import (
    OrchestratorError,
    QueueTimeout,
    Workflow,
    WorkflowFailed,
    create_app,
    list_runs,
    run_workflow,
)
from orchestrator.app import get_app
from orchestrator.core.priorities import redis_list
from orchestrator.engine.services import services_of
from orchestrator.ops.metrics import HistoryCollector
from orchestrator.ops.queue_depth import queue_depths, queue_source
from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing.cluster import Cluster
from orchestrator.testing.workers import Worker
from tests.integration.conftest import SETTINGS
from tests.integration.priority_tasks import prio_after, prio_block, prio_mark
from tests.integration.shapes import HOOK_KEY, note_failure
from tests.integration.waiting import eventually

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
LOW_RUNS = 30
MODULES = SETTINGS["ORCHESTRATOR_TASK_MODULES"] + ",tests.integration.priority_tasks"


def _rabbitmq_up() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=0)
        return True
    except Exception:
        return False


def overtaken(cluster: Cluster, app: Celery | None, queue: str, broker: dict[str, str]) -> int:
    """With a ``-c 1`` worker on ``queue`` kept busy, 30 runs of priority 0 then one of 9 are
    submitted; how many of the 30 started after the priority-9 run."""
    kv = redis.Redis.from_url(cluster.redis_url)
    key = f"test:prio:{queue}"
    blocker = Workflow(f"prio_block_{queue}").step("block", prio_block, queue=queue)
    marked = Workflow(f"prio_mark_{queue}").step("mark", prio_mark, queue=queue)
    env = {"ORCHESTRATOR_TASK_MODULES": MODULES, **broker}
    worker = cluster.start_worker("prio", concurrency=1, env=env, args=("-Q", queue))
    try:
        run_workflow(blocker, {"key": key}, app=app)
        eventually(lambda: kv.exists(f"{key}:started"), 60, "the blocking step to start")
        for i in range(LOW_RUNS):
            run_workflow(marked, {"key": key, "tag": f"low{i}"}, priority=0, app=app)
        run_workflow(marked, {"key": key, "tag": "high"}, priority=9, app=app)
        kv.set(f"{key}:release", 1)
        eventually(lambda: kv.llen(key) == LOW_RUNS + 1, 90, "every marked run to start")
        order = [t.decode() for t in kv.lrange(key, 0, -1)]
    finally:
        worker.stop()
    print(f"{queue}: start order {order}")
    return LOW_RUNS - order.index("high")


@pytest.fixture
def queue() -> str:
    return f"prio-{uuid.uuid4().hex[:8]}"


def test_a_priority_9_run_starts_ahead_of_30_queued_low_runs_on_redis(
    cluster: Cluster, queue: str
) -> None:
    # Given a busy -c 1 worker and 30 runs of priority 0 queued, then one of priority 9
    # When the worker frees up / Then the priority-9 run starts before (almost) all of them
    ahead = overtaken(cluster, None, queue, {})
    print(f"redis: the priority-9 run started ahead of {ahead} of {LOW_RUNS}")
    assert ahead >= 25


@pytest.fixture
def amqp_app(cluster: Cluster) -> Iterator[Celery]:
    """A client app on the machine's RabbitMQ (history and run state as the cluster's)."""
    if not _rabbitmq_up():
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL}")
    app = create_app(Settings().model_copy(update={"broker_url": AMQP_URL}))
    yield app
    services_of(app).close()


def test_a_priority_9_run_starts_ahead_of_30_queued_low_runs_on_rabbitmq(
    cluster: Cluster, amqp_app: Celery, queue: str
) -> None:
    try:
        # Given the same on RabbitMQ, in a queue declared with x-max-priority
        ahead = overtaken(cluster, amqp_app, queue, {"ORCHESTRATOR_BROKER_URL": AMQP_URL})
        print(f"rabbitmq: the priority-9 run started ahead of {ahead} of {LOW_RUNS}")
        assert ahead >= 25
    finally:
        with amqp_app.connection_for_write() as conn:  # leave the machine's RabbitMQ as it was
            channel = conn.channel()
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


def test_a_rabbitmq_queue_declared_without_priorities_fails_the_submit_saying_why(
    amqp_app: Celery,
) -> None:
    # Given a queue declared before, without x-max-priority (an existing deployment)
    old = f"prio-old-{uuid.uuid4().hex[:8]}"
    with amqp_app.connection_for_write() as conn:
        KombuQueue(old, Exchange(old), routing_key=old)(conn.default_channel).declare()
    wf = Workflow(f"prio_old_{old}").step("mark", prio_mark, queue=old)
    try:
        # When a run is submitted to it / Then the error says why and what to do
        with pytest.raises(OrchestratorError, match="PRECONDITION_FAILED") as refused:
            run_workflow(wf, {"key": "k", "tag": "t"}, app=amqp_app)
        assert "ORCHESTRATOR_PRIORITY_QUEUES=false" in str(refused.value)
        [run] = list_runs(wf.name, app=amqp_app)
        assert run.status == RunStatus.FAILED and "x-max-priority" in (run.error or "")
    finally:
        with amqp_app.connection_for_write() as conn:
            channel = conn.channel()
            channel.queue_delete(old)
            channel.exchange_delete(old)


def test_a_step_no_worker_consumes_fails_with_queue_timeout(
    cluster: Cluster, worker: Worker
) -> None:
    # Given a step routed to a queue no worker consumes, with a queue timeout of 2 s
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    wf = (
        Workflow(f"prio_qt_{nobody}", on_failure=note_failure)
        .step("gpu", prio_mark, queue=nobody, queue_timeout=2)
        .step("after", prio_after, after="gpu")
    )
    interval = Settings().reconcile_interval
    started = time.monotonic()
    run = run_workflow(wf, {"key": "test:prio:never", "tag": "never"})
    # When it is left waiting
    with pytest.raises(WorkflowFailed) as failed:
        run.wait(timeout=2 + interval + 30)
    elapsed = time.monotonic() - started
    print(f"queue_timeout=2s, reconcile_interval={interval}s: failed after {elapsed:.1f}s")
    # Then the run failed at that step with QueueTimeout, naming workflow, step, queue and why
    assert failed.value.step == "gpu"
    error = failed.value.error or ""
    assert error.startswith(f"{QueueTimeout.__name__}: workflow {wf.name!r}, step 'gpu'")
    assert f"on queue {nobody!r}" in error and "no live worker consumes this queue" in error
    assert elapsed < 2 + interval + 10
    steps = {s.step_id: s for s in run.steps()}
    assert steps["gpu"].status == StepStatus.FAILED
    assert steps["after"].status == StepStatus.SKIPPED
    # And on_failure was called once, as for any failed step
    kv = redis.Redis.from_url(cluster.redis_url)

    def hooked() -> list[dict[str, Any]]:
        found = [json.loads(x) for x in kv.lrange(HOOK_KEY, 0, -1)]
        return [f for f in found if f["run_id"] == run.id]

    [call] = eventually(hooked, 30, "on_failure to be called")
    assert call["step"] == "gpu" and "QueueTimeout" in call["error"]


def test_queue_depth_counts_every_priority_list_of_a_queue(cluster: Cluster) -> None:
    # Given two runs waiting in a queue nobody consumes, of priority 0 and 9
    idle = f"idle-{uuid.uuid4().hex[:8]}"
    wf = Workflow(f"prio_depth_{idle}").step("mark", prio_mark, queue=idle)
    runs = [run_workflow(wf, {"key": "test:prio:never", "tag": str(p)}, priority=p) for p in (0, 9)]
    try:
        # Then kombu keeps them in two lists: priority 9 in the queue's own, 0 in its last
        kv = redis.Redis.from_url(cluster.broker_url)
        assert kv.llen(redis_list(idle, 9)) == 1 and redis_list(idle, 9) == idle
        assert kv.llen(redis_list(idle, 0)) == 1
        # And the queue depth counts both, directly and as the metric
        app = get_app()
        assert queue_depths(app, [idle, "no-such-queue"]) == [(idle, 2)]
        engine = create_engine(Settings().sqlalchemy_url)
        try:
            families = list(HistoryCollector(lambda: engine, queues=queue_source(app)).collect())
        finally:
            engine.dispose()
        [depth] = [f for f in families if f.name == "orchestrator_queue_depth"]
        assert {s.labels["queue"]: s.value for s in depth.samples}[idle] == 2.0
    finally:
        for run in runs:
            run.cancel()
    assert all(r.status() == RunStatus.CANCELLED for r in runs)
