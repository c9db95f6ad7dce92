"""Faults while runs sleep and wait: the worker SIGKILLed and Redis emptied and restarted.

Runs of three workflows park (``sleep``, ``wait_for`` a signal, ``wait_for`` that times out and
skips); half the waiting runs get their signal before the fault. Then the only worker is
SIGKILLed and Redis loses everything (``FLUSHALL``, ``kill -9``, restart: as a Redis that keeps
nothing on disk), a replacement worker starts (at once, or only once every run is overdue), and
the other waiting runs get their signal.
Every run must still end: succeeded, every effect written once, and each sleep and timeout
ending at its time, not before, and within the bound stated in ``engine.sleeping`` (the
reconciler wakes what PostgreSQL says is due: ``wake_grace`` + a pass after its time, once a
worker runs again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from orchestrator import Workflow
from tests.faults import effects
from tests.faults.harness import TERMINAL, FaultCluster, kill
from tests.faults.test_faults import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

RUNS = 30  # of each workflow
SLEEP = 20.0  # seconds each sleep and each timeout lasts: the fault happens meanwhile
INTERVAL = 1.0  # ORCHESTRATOR_RECONCILE_INTERVAL of the fault clusters (harness.DEFAULT_ENV)
BOUND = 2 * INTERVAL + INTERVAL + 3.0  # wake_grace + a pass + delivery on a busy machine
DEADLINE = 120.0


def _parked(c: FaultCluster, run_ids: list[str], step: str) -> int:
    rows = c.sql(
        "SELECT count(*) FROM task_runs WHERE run_id = ANY(%s::uuid[]) AND step_id = %s "
        "AND status = 'running'",
        (run_ids, step),
    )
    return int(rows[0][0])


def _lateness(c: FaultCluster, run_ids: list[str], step: str, back: float) -> list[float]:
    """Seconds each step ended after its time, or after ``back`` (a worker ran again) if that
    was later (negative: it ended before its time)."""
    rows = c.sql(
        "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at) FROM task_runs "
        "WHERE run_id = ANY(%s::uuid[]) AND step_id = %s",
        (run_ids, step),
    )
    return [
        float(end) - max(float(start) + SLEEP, back)
        for start, end in rows
        if start is not None and end is not None
    ]


def _latest_due(c: FaultCluster, run_ids: list[str]) -> float:
    rows = c.sql(
        "SELECT max(extract(epoch FROM started_at)) FROM task_runs "
        "WHERE run_id = ANY(%s::uuid[]) AND step_id IN ('nap', 'late')",
        (run_ids,),
    )
    return float(rows[0][0]) + SLEEP


@pytest.mark.parametrize("down", ["briefly", "past_due"])
def test_worker_killed_and_redis_emptied_while_runs_sleep_and_wait(
    cluster: Callable[..., FaultCluster], down: str
) -> None:
    """``briefly``: a worker runs again long before the runs are due (recovery parks them again
    with their first due time); ``past_due``: no worker runs until every one is overdue (the
    reconciler wakes them from what PostgreSQL holds)."""
    c = cluster()
    worker = c.start_worker()
    sleeper = Workflow("faults-sleep").sleep("nap", SLEEP)
    sleeper.step("after", effects.effect, after="nap")
    waiter = Workflow("faults-wait").wait_for("approval", signal="go", timeout=600)
    waiter.step("after", effects.effect, after="approval")
    timer = Workflow("faults-timeout").step("before", effects.effect)
    timer.wait_for("late", signal="never", after="before", timeout=SLEEP, on_timeout="skip")

    started = time.time()
    sleeps = [sleeper.run() for _ in range(RUNS)]
    waits = [waiter.run() for _ in range(RUNS)]
    timeouts = [timer.run() for _ in range(RUNS)]
    for index, run in enumerate(waits[: RUNS // 2]):
        run.signal("go", {"early": index})
    ids = {
        "nap": [r.id for r in sleeps],
        "approval": [r.id for r in waits[RUNS // 2 :]],
        "late": [r.id for r in timeouts],
    }
    for step, runs in ids.items():
        wait_for(lambda s=step, r=runs: _parked(c, r, s) == len(r), 60, f"every {step} parked")
    assert time.time() - started < SLEEP - 5, "too slow to park before the sleeps end"

    assert c.redis is not None  # the cluster's own Redis
    fault_at = time.time()
    worker.kill()  # SIGKILL, the whole process group
    redis.Redis.from_url(c.redis_url).flushall()  # a Redis that keeps nothing on disk
    kill(c.redis)
    time.sleep(1.0)
    c.redis.start()
    if down == "past_due":  # the worker stays down across every due time
        time.sleep(max(0.0, _latest_due(c, [r.id for r in sleeps + timeouts]) + 2 - time.time()))
    c.replace(worker)
    back = time.time()
    for index, run in enumerate(waits[RUNS // 2 :]):
        run.signal("go", {"late": index})

    everything = [r.id for r in sleeps + waits + timeouts]
    effect_steps = {r.id: ["after"] for r in sleeps + waits} | {r.id: ["before"] for r in timeouts}
    out = c.observe(
        f"waiting: worker SIGKILL + Redis emptied and restarted, worker down {down}",
        everything,
        effect_steps,
        fault_at,
        started,
        DEADLINE,
    )
    late = {step: _lateness(c, ids[step], step, back) for step in ("nap", "late")}
    out.notes["lateness_max_s"] = {s: round(max(v, default=-1), 2) for s, v in late.items()}
    out.notes["bound_s"] = BOUND
    print(f"sleep/timeout lateness max {out.notes['lateness_max_s']} s, bound {BOUND} s")
    out.assert_pass()
    assert out.succeeded == len(everything)
    payloads = c.sql(
        "SELECT result FROM task_runs WHERE run_id = ANY(%s::uuid[]) AND step_id = 'approval'",
        ([r.id for r in waits],),
    )
    assert sorted(str(p[0]) for p in payloads) == sorted(
        [str({"early": i}) for i in range(RUNS // 2)]
        + [str({"late": i}) for i in range(RUNS - RUNS // 2)]
    )
    statuses = c.sql(
        "SELECT status, count(*) FROM task_runs WHERE run_id = ANY(%s::uuid[]) "
        "AND step_id = 'late' GROUP BY 1",
        (ids["late"],),
    )
    assert dict(statuses) == {"skipped": RUNS}
    for step, values in late.items():
        assert all(v >= -0.01 for v in values), (step, "ended before its time", min(values))
        assert len(values) == RUNS and max(values) <= BOUND, (step, max(values), BOUND)
    assert all(s in TERMINAL for s in c.statuses(everything).values())
