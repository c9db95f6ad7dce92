"""Workflow concurrency limits end to end: two worker processes, real Redis and PostgreSQL.

Each step notes when it started and ended (``concurrency_tasks.span``); the limit holds when,
for one key, no instant has more steps running than ``max_runs``.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine

from orchestrator import RunStatus, WorkflowFailed, get_run
from orchestrator.app import default_services
from orchestrator.core.concurrency import slot_name
from orchestrator.engine.concurrency import waiting_detail
from orchestrator.ops.metrics import HistoryCollector
from orchestrator.settings import get_settings
from orchestrator.stores.redis.slots import RedisSlots
from tests.integration import concurrency_tasks as cc
from tests.integration.conftest import SETTINGS
from tests.unit.test_concurrency import check_slot_rules

pytestmark = pytest.mark.integration

MODULES = f"{SETTINGS['ORCHESTRATOR_TASK_MODULES']},tests.integration.concurrency_tasks"


@pytest.fixture(scope="module")
def two_workers(start_worker: Callable[..., Any]) -> Iterator[list[Any]]:
    """Two worker processes (two pool processes each) consuming the limited steps' queue."""
    env = {"ORCHESTRATOR_TASK_MODULES": MODULES}
    workers = [start_worker("cc", env=env, args=("-Q", f"{cc.QUEUE},celery")) for _ in range(2)]
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
def client(servers: dict[str, str]) -> redis.Redis:
    return redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])


@pytest.fixture
def log() -> str:
    return f"test:cc:{uuid.uuid4().hex}"


def spans(client: redis.Redis, log: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.lrange(log, 0, -1)]


def most_at_once(found: list[dict[str, Any]]) -> int:
    """The most spans running at one instant (one that ends as another starts: not both)."""
    edges = sorted([(s["end"], -1) for s in found] + [(s["start"], 1) for s in found])
    most = running = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def waiting_metric(workflow: str) -> float | None:
    """``orchestrator_runs_waiting_for_concurrency`` of ``workflow``, as a scrape reads it."""
    engine = create_engine(get_settings().sqlalchemy_url)
    try:
        families = list(HistoryCollector(lambda: engine).collect())
    finally:
        engine.dispose()
    return next(
        (
            sample.value
            for family in families
            if family.name == "orchestrator_runs_waiting_for_concurrency"
            for sample in family.samples
            if sample.labels == {"workflow": workflow}
        ),
        None,
    )


def inputs(tenant: str, n: int, log: str, ms: int = 200) -> dict[str, Any]:
    return {"tenant": tenant, "n": n, "log": log, "ms": ms}


def test_the_limit_holds_per_key_and_another_key_runs_beside_it(
    two_workers: list[Any], client: redis.Redis, log: str
) -> None:
    # Given a limit of 2 runs per tenant: 6 runs of acme and 2 of globex, submitted at once
    acme = [cc.PER_TENANT.run(inputs("acme", n, log, 400)) for n in range(6)]
    globex = [cc.PER_TENANT.run(inputs("globex", n, log, 400)) for n in range(2)]
    # Then the runs over the limit wait, and say what for
    waiting = [r for r in acme if get_run(r.id).status() == RunStatus.PENDING]
    assert waiting
    # When they all end
    assert [r.wait(timeout=60) for r in acme + globex] == [*range(6), *range(2)]
    found = spans(client, log)
    of_acme = [s for s in found if s["tenant"] == "acme"]
    of_globex = [s for s in found if s["tenant"] == "globex"]
    # Then at most 2 steps of acme ran at any instant (and 2 did), and globex ran beside them
    assert most_at_once(of_acme) == 2
    assert most_at_once(found) > 2
    assert any(g["start"] < a["end"] and a["start"] < g["end"] for g in of_globex for a in of_acme)


def test_queued_runs_start_in_submit_order(
    two_workers: list[Any], client: redis.Redis, log: str, servers: dict[str, str]
) -> None:
    # Given one run at a time, and five submitted one after the other
    runs = [cc.ONE_AT_A_TIME.run(inputs("any", n, log, 400)) for n in range(5)]
    # Then the last waits in line, pending
    slots = RedisSlots(redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"]))
    state, position, held, _ = slots.where(slot_name("cc_one_at_a_time", None), runs[-1].id)
    assert (state, held) == ("waiting", 1) and 1 <= position <= 4
    assert runs[-1].status() == RunStatus.PENDING
    # When they all end, they ran one at a time, in submit order
    assert [r.wait(timeout=60) for r in runs] == list(range(5))
    found = sorted(spans(client, log), key=lambda s: s["start"])
    assert [s["n"] for s in found] == list(range(5))
    assert most_at_once(found) == 1


def test_a_waiting_run_names_its_place_in_line(two_workers: list[Any], log: str) -> None:
    runs = [cc.ONE_AT_A_TIME.run(inputs("any", n, log, 1500)) for n in range(3)]
    [step] = runs[2].steps()
    assert step.waiting_for == "concurrency"
    assert step.waiting_detail == "1 of 1 runs of 'cc_one_at_a_time' running; 2nd in line"
    assert waiting_metric("cc_one_at_a_time") == 2.0
    rt = default_services()
    runs[1].cancel()  # a cancelled run leaves the line
    detail = waiting_detail(rt, cc.ONE_AT_A_TIME.spec, runs[2].id, inputs("any", 2, log))
    assert detail == "1 of 1 runs of 'cc_one_at_a_time' running; 1st in line"
    assert runs[2].wait(timeout=30) == 2
    assert runs[1].status() == RunStatus.CANCELLED


def test_cancel_newest_cancels_the_run_over_the_limit(two_workers: list[Any], log: str) -> None:
    first = cc.NEWEST.run(inputs("any", 1, log, 1000))
    second = cc.NEWEST.run(inputs("any", 2, log))
    assert second.status() == RunStatus.CANCELLED
    with pytest.raises(WorkflowFailed, match="concurrency"):
        second.wait(timeout=10)
    assert first.wait(timeout=30) == 1


def test_cancel_oldest_cancels_the_running_run_and_starts_the_new_one(
    two_workers: list[Any], log: str
) -> None:
    first = cc.OLDEST.run(inputs("any", 1, log, 1000))
    second = cc.OLDEST.run(inputs("any", 2, log))
    assert first.status() == RunStatus.CANCELLED
    assert second.wait(timeout=30) == 2


def test_50_concurrent_submits_for_one_key_never_exceed_the_limit(
    two_workers: list[Any], client: redis.Redis, log: str
) -> None:
    # Given 50 threads submitting a run of one tenant at the same moment (limit 2)
    runs: list[Any] = []
    gate = threading.Barrier(50)
    lock = threading.Lock()

    def submit(n: int) -> None:
        gate.wait()
        run = cc.RACE.run(inputs("race", n, log, 50))
        with lock:
            runs.append(run)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then every run ends, and no instant had more than 2 of them running
    assert sorted(r.wait(timeout=120) for r in runs) == list(range(50))
    found = spans(client, log)
    assert len(found) == 50
    assert most_at_once(found) <= 2


def own_slots(servers: dict[str, str]) -> RedisSlots:
    """Slots under a prefix of the test's own: the workers' reconcilers do not see them (they
    would free the slots of these runs, which history does not know)."""
    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    return RedisSlots(client, prefix=f"test:cc:{uuid.uuid4().hex}:")


def test_the_redis_store_keeps_the_slot_rules(servers: dict[str, str]) -> None:
    slots = own_slots(servers)
    check_slot_rules(slots, slot_name(f"rules-{uuid.uuid4().hex}", "acme"))


def test_racing_acquires_on_redis_admit_exactly_the_limit(servers: dict[str, str]) -> None:
    slots = own_slots(servers)
    slot, gate = slot_name(f"race-{uuid.uuid4().hex}", "k"), threading.Barrier(50)
    outcomes: list[str] = []

    def ask(n: int) -> None:
        gate.wait()
        outcomes.append(slots.acquire(slot, f"run-{n}", 3, "queue").outcome)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes).count("started") == 3
    held, waiting = slots.line(slot)
    assert len(held) == 3 and len(waiting) == 47
