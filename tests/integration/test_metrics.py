"""The monitoring endpoint of a real two-process prefork worker: /metrics, /health, /ready, logs."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Workflow, WorkflowFailed
from orchestrator.testing.workers import Worker
from tests.integration import monitored as tasks
from tests.integration import workload

pytestmark = pytest.mark.integration
QUEUE = "metrics"  # only the worker under test takes these steps
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Endpoint:
    worker: Worker
    url: str

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def scrape(self) -> Samples:
        status, body = self.get("/metrics")
        assert status == 200, body
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_monitored(
    start: Callable[..., Worker],
    servers: dict[str, str],
    name: str,
    concurrency: int,
    queue: str,
    **env: str,
) -> Endpoint:
    port = free_port()
    modules = servers["ORCHESTRATOR_TASK_MODULES"] + ",tests.integration.monitored"
    worker = start(
        name,
        concurrency=concurrency,
        args=("-Q", queue),
        env={
            "ORCHESTRATOR_METRICS_PORT": str(port),
            "ORCHESTRATOR_TASK_MODULES": modules,
            **env,
        },
    )
    return Endpoint(worker, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def endpoint(start_worker: Callable[..., Worker], servers: dict[str, str]) -> Endpoint:
    """A prefork worker with two processes, JSON logs and its endpoint on a free port."""
    return start_monitored(
        start_worker, servers, "metrics", 2, QUEUE, ORCHESTRATOR_LOG_FORMAT="json"
    )


def eventually(check: Callable[[], list[str]], timeout: float = 20.0) -> None:
    """Poll ``check`` (it returns what is still wrong) until it returns nothing."""
    deadline = time.monotonic() + timeout
    while (wrong := check()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not wrong, wrong


def pair_workflow(suffix: str) -> Workflow:
    wf = Workflow(f"m-ok-{suffix}")
    wf.step("a", workload.noop, queue=QUEUE)
    wf.step("b", tasks.pair, after="a", queue=QUEUE)
    wf.step("c", tasks.pair, after="a", queue=QUEUE)
    return wf


def run_mix(suffix: str) -> dict[str, Any]:
    """Three pair runs that succeed, one that fails (its dependent skipped), one retried once."""
    ok = pair_workflow(suffix)
    ok_runs = []
    for _ in range(3):  # one at a time: two pairs at once could hold both processes, waiting
        ok_runs.append(ok.run())
        ok_runs[-1].wait(timeout=60)
    bad = Workflow(f"m-bad-{suffix}")
    bad.step("a", workload.noop, queue=QUEUE)
    bad.step("bad", workload.boom, after="a", queue=QUEUE)
    bad.step("after", workload.noop, after="bad", queue=QUEUE)
    flaky = Workflow(f"m-retry-{suffix}").step(
        "s",
        workload.flaky,
        kwargs={"key": f"m-{suffix}", "succeed_on": 2},
        queue=QUEUE,
        retry={"max_attempts": 3, "base_delay": 0.1, "jitter": False},
    )
    bad_run, flaky_run = bad.run(), flaky.run()
    with pytest.raises(WorkflowFailed):
        bad_run.wait(timeout=60)
    assert flaky_run.wait(timeout=60) == 2
    return {"ok": ok, "bad": bad, "flaky": flaky, "ok_runs": ok_runs}


def dead_letters(servers: dict[str, str]) -> float:
    with psycopg.connect(servers["ORCHESTRATOR_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL").fetchone()
    return float(row[0]) if row else 0.0


def test_metrics_count_every_run_and_step_whichever_process_ran_it(
    endpoint: Endpoint, servers: dict[str, str]
) -> None:
    # Given the totals before, and a mix of runs whose paired steps ran in both pool processes
    before = endpoint.scrape()
    mix = run_mix(uuid.uuid4().hex[:8])
    for run in mix["ok_runs"]:
        pids = {s.result for s in run.steps() if s.step_id in ("b", "c")}
        assert len(pids) == 2, f"run {run.id} did not use both pool processes: {pids}"
    ok, bad, flaky = mix["ok"].name, mix["bad"].name, mix["flaky"].name
    # 3 runs x 3 steps, a -> bad -> after (after skipped), one step tried twice
    expected = [
        ("orchestrator_flow_runs_processed_total", {"workflow": ok, "status": "succeeded"}, 3),
        ("orchestrator_flow_runs_processed_total", {"workflow": bad, "status": "failed"}, 1),
        ("orchestrator_flow_runs_processed_total", {"workflow": flaky, "status": "succeeded"}, 1),
        ("orchestrator_run_execution_seconds_count", {"workflow": ok}, 3),
        ("orchestrator_run_execution_seconds_count", {"workflow": bad}, 1),
        ("orchestrator_tasks_scheduled_total", {}, 9 + 3 + 1),
        ("orchestrator_tasks_completed_total", {"status": "succeeded"}, 9 + 1 + 1),
        ("orchestrator_tasks_completed_total", {"status": "failed"}, 1),
        ("orchestrator_tasks_completed_total", {"status": "skipped"}, 0),
        ("orchestrator_retry_attempts_total", {}, 1),
        ("orchestrator_task_execution_seconds_count", {"task": tasks.pair.name}, 6),
        ("orchestrator_task_execution_seconds_count", {"task": workload.flaky.name}, 2),
        ("orchestrator_active_runs", {}, 0),
    ]

    def wrong() -> list[str]:
        after = endpoint.scrape()
        found = [(n, lb, value(after, n, **lb) - value(before, n, **lb)) for n, lb, _ in expected]
        return [
            f"{n}{lb}: {got} != {want}"
            for (n, lb, got), (*_, want) in zip(found, expected, strict=True)
            if got != want
        ]

    # Then every count went up by exactly what happened
    eventually(wrong)
    after = endpoint.scrape()
    assert value(after, "orchestrator_dead_letter_queue_size") == dead_letters(servers)
    assert value(after, "orchestrator_history_up") == 1.0
    assert value(after, "orchestrator_worker_ready") == 1.0
    durations = value(after, "orchestrator_run_execution_seconds_sum", workflow=ok)
    assert (
        durations > 0
        and value(after, "orchestrator_run_execution_seconds_bucket", workflow=ok, le="+Inf") == 3
    )


def test_health_and_ready_answer_200_when_broker_and_database_answer(endpoint: Endpoint) -> None:
    status, body = endpoint.get("/health")
    assert status == 200 and json.loads(body)["status"] == "alive"
    status, body = endpoint.get("/ready")
    assert status == 200, body
    assert json.loads(body) == {"status": "ready", "checks": {"broker": "ok", "database": "ok"}}
    assert endpoint.get("/nope")[0] == 404


def test_json_log_lines_carry_the_run_step_task_and_attempt(endpoint: Endpoint) -> None:
    # Given a run whose paired steps log while they run
    run = pair_workflow(uuid.uuid4().hex[:8]).run()
    run.wait(timeout=60)
    steps = {s.step_id: s for s in run.steps()}
    # Then the worker's log has one JSON line per step naming the run, step, task and attempt
    mine: list[dict[str, Any]] = []

    def missing() -> list[str]:
        lines = [json.loads(x) for x in endpoint.worker.output().splitlines() if x.startswith("{")]
        mine[:] = [x for x in lines if x.get("run_id") == run.id]
        return [] if len(mine) == 2 else [f"log lines of run {run.id}: {mine}"]

    eventually(missing)
    assert {x["step_id"] for x in mine} == {"b", "c"}
    for line in mine:
        assert line["task_id"] == steps[line["step_id"]].celery_task_id
        assert line["attempt"] == 1 and line["logger"] == tasks.__name__
    assert len({x["process"] for x in mine}) == 2
    # and the lines logged outside any step carry none of it
    ready = [
        json.loads(x)
        for x in endpoint.worker.output().splitlines()
        if x.startswith("{") and " ready." in x
    ]
    assert ready and "run_id" not in ready[0]


def test_circuit_breaker_state_is_reported(endpoint: Endpoint, servers: dict[str, str]) -> None:
    from orchestrator.core.breaker import BreakerConfig
    from orchestrator.stores.redis.breakers import RedisBreakerStore

    # Given a breaker opened by one failure
    store = RedisBreakerStore(redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"]))
    cfg = BreakerConfig(f"m-breaker-{uuid.uuid4().hex[:8]}", failure_threshold=1)
    store.report(cfg, ok=False, trial=False)
    try:
        # Then it reads 2 (open), and 0 once a trial call closed it
        state = "orchestrator_circuit_breaker_state"
        assert value(endpoint.scrape(), state, breaker=cfg.name) == 2.0
        store.report(cfg, ok=True, trial=True)
        assert value(endpoint.scrape(), state, breaker=cfg.name) == 0.0
    finally:
        store.reset(cfg.name)


def test_ready_is_503_naming_the_database_when_it_is_unreachable(
    start_worker: Callable[..., Worker], servers: dict[str, str]
) -> None:
    # Given a worker whose database URL points at a closed port (with a password in it)
    bad_db = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nowhere"
    endpoint = start_monitored(
        start_worker,
        servers,
        "nodb",
        1,
        "metrics-nodb",
        ORCHESTRATOR_DATABASE_URL=bad_db,
    )
    # Then it is alive but not ready, saying the database failed and the broker is fine
    assert endpoint.get("/health")[0] == 200
    status, body = endpoint.get("/ready")
    assert status == 503, body
    answer = json.loads(body)
    assert answer["status"] == "not ready" and answer["checks"]["broker"] == "ok"
    assert answer["checks"]["database"].startswith("failed: ")
    assert b"hunter2" not in body
    # and /metrics still answers, saying history is unreadable and the worker not ready
    samples = endpoint.scrape()
    assert value(samples, "orchestrator_history_up") == 0.0
    assert value(samples, "orchestrator_worker_ready") == 0.0
    # When the worker shuts down, the endpoint goes with it
    assert endpoint.worker.stop() == 0
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(endpoint.url + "/health", timeout=5)
