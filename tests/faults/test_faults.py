"""Faults injected into real workers, Redis and PostgreSQL while runs execute (conftest.py).

Tuned timings (``harness.DEFAULT_ENV``: lease 3 s, reconcile every 1 s, stall timeout 10 s,
visibility timeout 20 s). The tests share one cluster (test 6 one with a broker of its own), and
restart what they kill. Sizes (``harness.sized``): the default form runs 12 runs in tests 1 and
2 (the long form, ``FAULTS_LONG=1``: 20) and 60 runs in tests 4 and 5 (long: 200), and a 12 s
retry delay in test 8 (long: 15 s); every test counts runs that never end and effects done twice
in both forms.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import ServiceUnavailable, Workflow, run_workflow
from orchestrator.testing.workers import Worker
from tests.faults import effects
from tests.faults.harness import FaultCluster, kill, pause, resume, sized
from tests.faults.outcome import Outcome

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

DEADLINE = 120.0  # seconds a test waits for its runs to end after the last submit


def chain(name: str, n: int = 3, sleep: float = 0.0) -> Workflow:
    wf = Workflow(name)
    for i in range(n):
        wf.step(
            f"s{i}",
            effects.effect,
            after=f"s{i - 1}" if i else None,
            kwargs={"sleep": sleep} if sleep else {},
        )
    return wf


def diamond(name: str, sleep: float = 0.0) -> Workflow:
    kwargs = {"sleep": sleep} if sleep else {}
    return (
        Workflow(name)
        .step("a", effects.effect, kwargs=kwargs)
        .step("b", effects.effect, after="a", kwargs=kwargs)
        .step("c", effects.effect, after="a", kwargs=kwargs)
        .step("d", effects.effect, after=["b", "c"], kwargs=kwargs)
    )


def step_ids(wf: Workflow) -> list[str]:
    return [s.id for s in wf.spec.steps]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def busy_child(
    c: FaultCluster, worker: Worker, window: float, killed: list[int] | None = None
) -> int | None:
    """A pool child (not one of ``killed``) that started a step body less than ``window``
    seconds ago (so is in it)."""
    rows = c.sql(
        "SELECT pid, extract(epoch FROM clock_timestamp() - at) FROM executions "
        "ORDER BY id DESC LIMIT 4"
    )
    pool = set(worker.pool()) - set(killed or [])
    for pid, age in rows:
        if pid in pool and float(age) < window:
            return int(pid)
    return None


# 1 -------------------------------------------------------------------------------------------


def test_1_pool_child_sigkilled_mid_step(cluster: Callable[..., FaultCluster]) -> None:
    c = cluster()
    worker = c.start_worker()
    wf = diamond("faults-pool-kill", sleep=0.4)
    started = time.time()
    runs = [wf.run().id for _ in range(sized(12, 20))]
    killed: list[int] = []
    fault_at = None
    for _ in range(3):  # three kills, each of a child inside a step body (effect written)
        pid = wait_for(lambda: busy_child(c, worker, 0.3, killed), 60, "a pool child inside a step")
        os.kill(pid, signal.SIGKILL)
        fault_at = fault_at or time.time()
        killed.append(pid)
    out = c.observe(
        "1 pool child SIGKILL mid-step",
        runs,
        step_ids(wf),
        fault_at,
        started,
        DEADLINE,
        notes={"kills": len(killed)},
    )
    out.assert_pass()
    # each killed step ran again under the same attempt: its second effect was absorbed by the key
    assert out.absorbed >= len(killed), out.line()


def test_1b_pool_child_killed_before_its_history_is_written(
    cluster: Callable[..., FaultCluster],
) -> None:
    """SIGKILL of a pool child whose finished steps reached Redis but not yet PostgreSQL.

    The worker's batched history writer holds events for ``ORCHESTRATOR_HISTORY_FLUSH_INTERVAL``
    (20 ms by default, 5 s here, so that the kill lands in the window every time; a run's end
    flushes at once, so the kill comes while the last step of the first run is still sleeping).
    """
    c = cluster()
    worker = c.start_worker(concurrency=1, env={"ORCHESTRATOR_HISTORY_FLUSH_INTERVAL": "5"})
    wf = (
        Workflow("faults-history-kill")
        .step("s0", effects.effect)
        .step("s1", effects.effect, after="s0")
        .step("s2", effects.effect, after="s1", kwargs={"sleep": 3.0})
    )
    started = time.time()
    runs = [wf.run().id for _ in range(2)]
    wait_for(
        lambda: c.sql("SELECT 1 FROM executions WHERE step_id = 's2'"), 30, "a last step to start"
    )
    pool = worker.pool()
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    fault_at = time.time()
    at_kill = c.statuses(runs)
    unwritten = sum(1 for s in at_kill.values() if s == "pending")
    assert unwritten, f"the kill came after the history flush (no fault injected): {at_kill}"
    out = c.observe(
        "1b pool child SIGKILL before its history flush",
        runs,
        step_ids(wf),
        fault_at,
        started,
        45.0,
        notes={"kills": len(pool), "runs_unwritten_at_kill": unwritten},
    )
    out.assert_pass()


# 2 -------------------------------------------------------------------------------------------


def test_2_whole_worker_sigkilled_then_replaced(cluster: Callable[..., FaultCluster]) -> None:
    c = cluster()
    first = c.start_worker("a")
    wf = diamond("faults-worker-kill", sleep=0.3)
    started = time.time()
    n = sized(12, 20)
    runs = [wf.run().id for _ in range(n)]
    wait_for(lambda: c.executions() >= 4 * n // 5, 60, "a fifth of the steps to run")
    first.kill()
    fault_at = time.time()
    done_before = sum(1 for s in c.statuses(runs).values() if s == "succeeded")
    c.start_worker("b")
    out = c.observe(
        "2 whole worker SIGKILL + new worker",
        runs,
        step_ids(wf),
        fault_at,
        started,
        DEADLINE,
        notes={"succeeded_before_kill": done_before},
    )
    out.assert_pass()


# 3 -------------------------------------------------------------------------------------------


def test_3_step_that_kills_its_process_is_dead_lettered(
    cluster: Callable[..., FaultCluster],
) -> None:
    max_deliveries = 3
    c = cluster(env={"ORCHESTRATOR_MAX_DELIVERIES": str(max_deliveries)})
    c.start_worker()
    poison = (
        Workflow("faults-poison")
        .step("a", effects.effect)
        .step("boom", effects.suicide, after="a")
        .step("z", effects.effect, after="boom")
    )
    healthy = chain("faults-poison-neighbours", sleep=0.1)
    started = time.time()
    bad = poison.run().id
    good = [healthy.run().id for _ in range(5)]
    out = c.observe(
        "3 step kills its own process every time",
        [bad, *good],
        {bad: ["a"], **{r: step_ids(healthy) for r in good}},
        started,
        started,
        DEADLINE,
    )
    out.assert_pass(all_succeed=False)
    statuses = c.statuses([bad, *good])
    assert statuses[bad] == "failed", c.diagnose(bad)
    assert all(statuses[r] == "succeeded" for r in good), statuses
    letters = c.sql("SELECT step_id, reason FROM dead_letters WHERE run_id = %s::uuid", (bad,))
    assert letters == [("boom", "too_many_deliveries")], (letters, c.diagnose(bad))
    steps = dict(c.sql("SELECT step_id, status FROM task_runs WHERE run_id = %s::uuid", (bad,)))
    assert steps == {"a": "succeeded", "boom": "failed", "z": "skipped"}, c.diagnose(bad)

    def boom_runs() -> int:
        return int(
            c.sql(
                "SELECT count(*) FROM executions WHERE run_id = %s::uuid AND step_id = 'boom'",
                (bad,),
            )[0][0]
        )

    executed = boom_runs()
    time.sleep(6.0)  # two lease periods: no further delivery (no loop)
    assert boom_runs() == executed == max_deliveries, c.diagnose(bad)


# 4 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["shutdown", "kill-9"])
def test_4_redis_stopped_mid_runs_then_restarted(
    cluster: Callable[..., FaultCluster], how: str
) -> None:
    c = cluster()
    c.start_worker()
    wf = chain(f"faults-redis-{how}")
    started = time.time()
    n = sized(60, 200)
    runs = [wf.run().id for _ in range(n)]
    wait_for(lambda: c.executions() >= 3 * n // 4, 90, "a quarter of the steps to run")
    before = c.executions()
    fault_at = time.time()
    if how == "shutdown":
        c.redis.stop()  # SIGTERM: as SHUTDOWN, the AOF fsynced
    else:
        kill(c.redis)
    time.sleep(3.0)
    c.redis.start()  # same port, same data dir (AOF)
    out = c.observe(
        f"4 Redis {how} + restart",
        runs,
        step_ids(wf),
        fault_at,
        started,
        DEADLINE,
        notes={"executions_at_fault": before, "down_seconds": round(time.time() - fault_at, 1)},
    )
    out.assert_pass()


# 5 -------------------------------------------------------------------------------------------


def test_5_postgres_restarted_immediate_three_times(cluster: Callable[..., FaultCluster]) -> None:
    c = cluster()
    c.start_worker()
    wf = chain("faults-pg-restart")
    started = time.time()
    n = sized(60, 200)
    runs = [wf.run().id for _ in range(n)]
    wait_for(lambda: c.executions() >= 3 * n // 10, 90, "a tenth of the steps to run")
    fault_at = time.time()
    for i in range(3):
        c.postgres.restart("immediate")
        if i < 2:
            time.sleep(2.0)
    out = c.observe(
        "5 PostgreSQL restart -m immediate x3", runs, step_ids(wf), fault_at, started, DEADLINE
    )
    out.assert_pass()


# 6 -------------------------------------------------------------------------------------------


def _submit_timed(
    wf: Workflow, cap: float = 32.0
) -> tuple[float, BaseException | None, threading.Thread]:
    """run_workflow in a thread; (seconds until it returned or raised, what it raised, thread)."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["handle"] = run_workflow(wf)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["error"] = exc

    start = time.monotonic()
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(cap)
    elapsed = time.monotonic() - start
    if thread.is_alive():
        return elapsed, TimeoutError(f"run_workflow still blocked after {cap:.0f}s"), thread
    return elapsed, box.get("error"), thread


@pytest.mark.parametrize(
    "how", ["broker-hung", "all-redis-hung", "broker-refused", "all-redis-refused"]
)
def test_6_broker_unreachable_at_submit(cluster: Callable[..., FaultCluster], how: str) -> None:
    """Refused: nothing listens on the port. Hung: the server is SIGSTOPped, so connections are
    accepted by the kernel but never answered (a dead host behind a live address, a partition).

    The broker is a Redis of its own; "all-redis" takes the state Redis away too. "broker-hung"
    runs first, on servers this process has not connected to yet: a process whose pooled
    connection to the broker is open when the broker hangs waits longer (25.7 s measured, with
    the variants before it on the same servers; see the README's fault notes)."""
    c = cluster(separate_broker=True)
    wf = chain(f"faults-nobroker-{how}")
    servers = [c.broker] if how.startswith("broker") else [c.broker, c.redis]
    started = time.time()
    hung = how.endswith("hung")
    for server in servers:
        (pause if hung else kill)(server)
    try:
        elapsed, error, thread = _submit_timed(wf)
        rows = c.sql(  # at the deadline
            "SELECT id::text, status, error FROM workflow_runs WHERE workflow = %s", (wf.name,)
        )
    finally:
        if hung:
            for server in servers:
                resume(server)
    thread.join(60)  # a blocked submit finishes before the test goes on (or fails)
    out = Outcome(
        test=f"6 broker unreachable at submit ({how})",
        submitted=len(rows),
        terminal=sum(1 for r in rows if r[1] in ("succeeded", "failed", "cancelled")),
        succeeded=0,
        failed=sum(1 for r in rows if r[1] == "failed"),
        cancelled=0,
        lost=0,
        stuck=sum(1 for r in rows if r[1] not in ("succeeded", "failed", "cancelled")),
        duplicated_effects=0,
        re_executions=0,
        absorbed=0,
        recovery_seconds=None,
        elapsed_seconds=round(time.time() - started, 1),
        notes={"raised_after_s": round(elapsed, 2), "raised": repr(error)[:300]},
    )
    out.publish()
    assert isinstance(error, ServiceUnavailable), f"{how}: {error!r} after {elapsed:.1f}s"
    assert elapsed < 15.0, f"{how}: ServiceUnavailable only after {elapsed:.1f}s"
    message = str(error)
    assert ("broker" in message or "Redis" in message) and "127.0.0.1" in message, message
    assert all(r[1] == "failed" for r in rows), rows  # no row, or a failed one: none pending
    # and once the broker is back, submitting works again from the same process
    if not hung:
        for server in servers:
            server.start()
    handle = run_workflow(wf)
    assert c.statuses([handle.id]) == {handle.id: "pending"}


# 7 -------------------------------------------------------------------------------------------


def test_7_concurrent_submits_with_one_idempotency_key(
    cluster: Callable[..., FaultCluster],
) -> None:
    c = cluster()
    c.start_worker()
    wf = chain("faults-idempotent")
    wf.spec  # noqa: B018 - validate and register before the threads race
    key = f"faults-{time.time_ns()}"
    barrier = threading.Barrier(50)
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit() -> None:
        try:
            barrier.wait(30)
            handle = run_workflow(wf, idempotency_key=key)
            with lock:
                ids.append(handle.id)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            with lock:
                errors.append(exc)

    started = time.time()
    threads = [threading.Thread(target=submit, daemon=True) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    rows = c.sql("SELECT id::text FROM workflow_runs WHERE idempotency_key = %s", (key,))
    all_rows = c.sql("SELECT count(*) FROM workflow_runs WHERE workflow = %s", (wf.name,))[0][0]
    out = c.observe(
        "7 50 concurrent submits, one idempotency key",
        [r[0] for r in rows],
        step_ids(wf),
        None,
        started,
        DEADLINE,
        notes={
            "handles": len(ids),
            "distinct_ids": len(set(ids)),
            "errors": len(errors),
            "rows": all_rows,
        },
    )
    assert not errors, errors[:3]
    assert len(ids) == 50 and len(set(ids)) == 1, set(ids)
    assert all_rows == 1 and [r[0] for r in rows] == ids[:1]
    out.assert_pass()
    assert out.re_executions == 0, out.line()


# 8 -------------------------------------------------------------------------------------------


def test_8_retry_delay_longer_than_stall_timeout_is_honoured(
    cluster: Callable[..., FaultCluster],
) -> None:
    """Not a crash: a step waiting out its retry delay must not look stalled to the reconciler.

    The delay (12 s; long form 15 s) is longer than ``ORCHESTRATOR_STALL_TIMEOUT`` (10 s) and,
    being over half the visibility timeout, is kept in Redis's delayed-message set; attempt 2
    must not start before it is due.
    """
    delay = sized(12.0, 15.0)
    c = cluster()
    c.start_worker()
    wf = Workflow("faults-long-retry").step(
        "s", effects.flaky, retry={"max_attempts": 2, "base_delay": delay, "jitter": False}
    )
    started = time.time()
    run = wf.run().id
    out = c.observe("8 retry delay > stall timeout", [run], ["s"], None, started, 60.0)
    out.assert_pass()
    at = [
        float(r[0])
        for r in c.sql(
            "SELECT extract(epoch FROM at) FROM executions WHERE run_id = %s::uuid ORDER BY at",
            (run,),
        )
    ]
    assert len(at) == 2, at
    gap = at[1] - at[0]
    print(f"attempt 2 started {gap:.1f} s after attempt 1 (policy: {delay} s)")
    assert gap >= delay - 0.5, (
        f"attempt 2 started {gap:.1f}s after attempt 1, not {delay}s: {c.diagnose(run)}"
    )
