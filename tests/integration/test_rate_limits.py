"""Global rate limits on real workers: two worker nodes share one window per key in Redis.

Each start is noted by the task itself (:mod:`tests.integration.rate_limited`) on Redis's
clock, the one the limiter's script reads. The limiter admits by exact admission times; a noted
start comes a little after its admission (recording the attempt, binding the arguments), and
that lag varies, so the windows are checked with a tolerance of ``LAG`` seconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import redis

from orchestrator import Workflow
from orchestrator.status import RunStatus
from orchestrator.stores.redis.rate_limits import DEFERRALS, RedisRateLimits
from orchestrator.testing.workers import Worker
from tests.integration import rate_limited
from tests.integration.conftest import SETTINGS
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration
LAG = 0.25  # seconds; a start is noted a little after its admission (see above)


@pytest.fixture(scope="module")
def two_workers(start_worker: Callable[..., Worker]) -> list[Worker]:
    """Two worker nodes (two pool processes each) consuming the rate-limited queue only; the
    cluster stops them with the others (stopping them here would cost ~8 s of wall time)."""
    modules = f"{SETTINGS['ORCHESTRATOR_TASK_MODULES']},{rate_limited.MODULE}"
    env = {"ORCHESTRATOR_TASK_MODULES": modules}
    args = ("-Q", rate_limited.QUEUE)
    workers = [start_worker("rl", 2, env=env, args=args, wait=False) for _ in range(2)]
    return [worker.await_ready() for worker in workers]


def crowded(starts: list[float], limit: int, period: float) -> list[tuple[float, float]]:
    """Pairs of starts ``limit`` apart that are closer than ``period`` (less the lag): each is
    a window that held more than ``limit`` starts."""
    starts = sorted(starts)
    return [(a, b) for a, b in zip(starts, starts[limit:], strict=False) if b - a < period - LAG]


def mapped(name: str, log: str, rate_limit: dict[str, object]) -> Workflow:
    """``list`` -> ``call`` for each item, ``call`` noting its starts under ``log``."""
    return (
        Workflow(name)
        .step("list", rate_limited.listing, queue=rate_limited.QUEUE)
        .step(
            "call",
            rate_limited.stamp,
            for_each="list",
            kwargs={"log": log},
            queue=rate_limited.QUEUE,
            rate_limit=rate_limit,
        )
    )


def _log() -> str:
    return uuid.uuid4().hex[:10]


def test_the_limit_holds_across_two_workers(
    two_workers: list[Worker], servers: dict[str, str]
) -> None:
    # Given 4 runs of 3 sibling steps each, all limited to 4 starts per 1.5 s on one key
    log, key = _log(), f"it-{_log()}"
    rl = {"key": key, "limit": 4, "period": 1.5}
    wf = Workflow("rl_siblings")
    for n in range(3):
        wf.step(
            f"s{n}",
            rate_limited.stamp,
            kwargs={"log": log},
            queue=rate_limited.QUEUE,
            rate_limit=rl,
        )
    # When they are submitted at once to two workers
    runs = [wf.run() for _ in range(4)]
    for run in runs:
        run.wait(timeout=60)
    # Then no 1.5-s window held more than 4 of the 12 starts, and both workers started steps
    noted = rate_limited.starts(log)
    assert len(noted) == 12
    assert crowded([e["at"] for e in noted], 4, 1.5) == []
    assert len({e["worker"] for e in noted}) == 2
    # And every step ran on its first attempt: a deferral uses no attempt
    assert {e["attempt"] for e in noted} == {1}
    assert {s.attempts for run in runs for s in run.steps()} == {1}
    # And the deferrals were counted (12 starts at 4 per window: at least 8 were deferred)
    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    assert int(client.hget(DEFERRALS, key) or 0) >= 8


def test_a_cel_key_limits_each_tenant_on_its_own(two_workers: list[Worker]) -> None:
    # Given 2 starts per 2 s per tenant, and a run of 4 items for each of two tenants
    log, prefix = _log(), _log()
    rl = {"key_expr": f"'{prefix}-' + inputs.tenant", "limit": 2, "period": 2.0}
    wf = mapped("rl_tenants", log, rl)
    # When both run at once
    runs = {tenant: wf.run({"count": 4, "tenant": tenant}) for tenant in ("acme", "globex")}
    for run in runs.values():
        assert run.wait(timeout=60) == [0, 1, 2, 3]
    # Then each tenant's starts keep to 2 per 2 s, over two windows
    noted = rate_limited.starts(log)
    assert len(noted) == 8 and {e["attempt"] for e in noted} == {1}
    for run in runs.values():
        mine = [e["at"] for e in noted if e["run"] == run.id]
        assert len(mine) == 4 and crowded(mine, 2, 2.0) == []
        assert max(mine) - min(mine) >= 2.0 - LAG
    # And the tenants did not wait for each other: together they passed 2 per 2 s (one shared
    # window would have held them to it, whatever the skew between the two runs)
    assert crowded([e["at"] for e in noted], 2, 2.0) != []


def test_twenty_parallel_items_against_five_per_second(two_workers: list[Worker]) -> None:
    # Given a for_each of 20 items limited to 5 starts per second
    log, key = _log(), f"race-{_log()}"
    wf = mapped("rl_race", log, {"key": key, "limit": 5, "period": 1.0})
    # When it runs on two workers (four pool processes racing for the slots)
    began = time.monotonic()
    run = wf.run({"count": 20})

    # Then, while it runs, items that wait say they wait for the rate limit, and until when
    def rate_limited_items() -> list[str]:
        details = [s.waiting_detail or "" for s in run.pending() if s.waiting_for == "rate_limit"]
        assert details or not run.status().terminal, "no item was seen waiting for the limit"
        return details

    details = eventually(rate_limited_items, timeout=30, what="an item waiting for the limit")
    assert details[0].startswith(f"rate limit {key!r} (5 per 1s) full; next start at ")
    assert run.wait(timeout=60) == list(range(20))
    took = time.monotonic() - began
    # Then no 1-s window held more than 5 starts, and all 20 started within four windows
    noted = rate_limited.starts(log)
    starts = [e["at"] for e in noted]
    assert len(starts) == 20 and crowded(starts, 5, 1.0) == []
    assert 3.0 - LAG <= max(starts) - min(starts) < 10.0  # about 3 s (4 windows) when idle
    assert {s.attempts for s in run.steps()} == {1}
    print(f"20 items at 5/s: first to last start {max(starts) - min(starts):.2f}s, run {took:.2f}s")
    assert run.status() == RunStatus.SUCCEEDED


def test_the_redis_window_counts_exactly(servers: dict[str, str]) -> None:
    # Given the Redis store and a key allowing 3 starts per 0.5 s
    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    limits = RedisRateLimits(client)
    key = f"exact-{_log()}"
    # When three start, Then each is counted; a fourth is told to wait at most the period
    assert [limits.acquire(key, 3, 0.5, f"m{n}") for n in range(3)] == [0.0, 0.0, 0.0]
    wait = limits.acquire(key, 3, 0.5, "m3")
    assert 0.0 < wait <= 0.5
    assert limits.deferrals()[key] == 1
    assert time.time() < limits.next_start(key, 3, 0.5) <= time.time() + 0.5
    # And a start given back makes room at once
    limits.release(key, "m0")
    assert limits.acquire(key, 3, 0.5, "m3") == 0.0
    # And once the wait it was told has passed, a start is counted again
    wait = limits.acquire(key, 3, 0.5, "m4")
    assert wait > 0
    time.sleep(wait)  # the very wait the limiter named, not a guess
    assert limits.acquire(key, 3, 0.5, "m4") == 0.0
    # (the starts that left the window were dropped: it never holds more than the limit)
    assert client.zcard(f"orch:ratelimit:{key}") <= 3
