"""Faults during run-time shapes: a worker SIGKILLed mid ``for_each`` fan-out and mid child run.

Issue 11's promise, tested with orchestrator's **default settings** (lease 30 s, reconcile every
5 s, stall timeout 300 s, visibility timeout 3600 s; ``cluster(defaults=True)``): only the
workload is the test's own. A killed step is recovered once its lease has been missing for a
whole lease period, so recovery takes about a minute (lease expiry, up to 30 s after the kill,
then 30 s more, then the next reconciler pass); the line's ``ended_after_kill_s`` note gives
each run's figure.

Forms (``tests/faults/harness.py``):

* default: one test, ``test_worker_sigkilled_mid_fan_out_and_child_run``: a 1,000-item fan-out
  and a parent whose child run takes 8 s run side by side on two workers; the worker running the
  child's step (and items of the fan-out) is SIGKILLed (process group). One recovery period
  covers both, which keeps ``make test`` short.
* long (``FAULTS_LONG=1``): also the two faults apart, each on its own: one of two workers
  SIGKILLed a tenth into the fan-out; the only worker SIGKILLed during the child's step, then a
  new worker started.

The steps and workflows are in ``tests/faults/shapes.py`` (imported by the workers too, so the
child workflow is registered there). Pass bar as in ``test_faults.py``: every run ends
succeeded, nothing lost or stuck, and every step and every item wrote its effect exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import RunStatus
from orchestrator.engine.handle import RunHandle
from orchestrator.testing.workers import Worker
from tests.faults import shapes
from tests.faults.harness import LONG, TERMINAL, FaultCluster
from tests.faults.test_faults import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600 if LONG else 420)]
long_only = pytest.mark.skipif(not LONG, reason="long form only (FAULTS_LONG=1)")

ITEMS = 1000
DEADLINE = 240.0  # seconds, from the kill, for the runs to end (default settings: ~1 min each)
ITEMS_DONE = "SELECT count(*) FROM effects WHERE run_id = %s::uuid AND step_id LIKE 'work[%%'"
FAN_OUT_STEPS = ["list", *(f"work[{i}]" for i in range(ITEMS)), "sink"]


def _effects_per_step(c: FaultCluster, run_id: str) -> dict[str, int]:
    rows = c.sql(
        "SELECT step_id, count(*) FROM effects WHERE run_id = %s::uuid GROUP BY 1", (run_id,)
    )
    return {step: int(n) for step, n in rows}


def _worker_of(c: FaultCluster, pid: int) -> Worker | None:
    return next((w for w in list(c.workers) if pid in w.pool()), None)


def _items_done(c: FaultCluster, run_id: str) -> int:
    return int(c.sql(ITEMS_DONE, (run_id,))[0][0])


def _child_step_pid(c: FaultCluster, parent_id: str, fan_out_id: str = "") -> int | None:
    """The pool process running the child run's step (the child's run id is not known yet)."""
    rows = c.sql(
        "SELECT pid FROM executions WHERE step_id = 'work' AND run_id <> ALL(%s::uuid[])",
        ([parent_id, *([fan_out_id] if fan_out_id else [])],),
    )
    return int(rows[0][0]) if rows else None


def _ended_after(c: FaultCluster, runs: dict[str, str], fault_at: float) -> dict[str, Any]:
    """Each run's end, in seconds after the kill (its ``finished_at``)."""
    rows = c.sql(
        "SELECT id::text, extract(epoch FROM finished_at) FROM workflow_runs "
        "WHERE id = ANY(%s::uuid[])",
        (list(runs.values()),),
    )
    ended = {r[0]: r[1] for r in rows}
    return {
        name: None if ended.get(run) is None else round(float(ended[run]) - fault_at, 1)
        for name, run in runs.items()
    }


def _check_fan_out(c: FaultCluster, run: RunHandle) -> None:
    assert run.status() == RunStatus.SUCCEEDED, c.diagnose(run.id)
    per_step = _effects_per_step(c, run.id)
    assert {s: n for s, n in per_step.items() if n != 1} == {}, "an effect done twice"
    assert sorted(per_step) == sorted(FAN_OUT_STEPS), "an item without its effect"
    mapped = {s.step_id: s for s in run.steps()}["work"]
    assert mapped.status == "succeeded"
    assert mapped.result == [f"work[{i}]" for i in range(ITEMS)]  # every item, in item order
    assert run.output == ITEMS  # the sink saw the 1,000 results


def _check_child(c: FaultCluster, parent: RunHandle, child: RunHandle) -> None:
    assert child.status() == RunStatus.SUCCEEDED, c.diagnose(child.id)
    assert parent.status() == RunStatus.SUCCEEDED, c.diagnose(parent.id)
    assert _effects_per_step(c, child.id) == {"work": 1}  # the child's effect, once
    assert _effects_per_step(c, parent.id) == {"prepare": 1}
    output = {"child_run": child.id, "step": "work"}
    assert child.output == output
    by_id = {s.step_id: s for s in parent.steps()}
    assert by_id["child"].result == output  # the parent step's result is the child's output
    assert parent.output == output
    assert child.record().parent_run_id == parent.id


def test_worker_sigkilled_mid_fan_out_and_child_run(cluster: Callable[..., FaultCluster]) -> None:
    """Default settings. A 1,000-item ``for_each`` and a parent whose child run's step takes
    8 s, on two workers; the worker running the child's step is SIGKILLed (process group) once
    the fan-out is under way. Every run ends succeeded, each item's and step's effect once."""
    c = cluster(defaults=True)
    c.start_worker("a", wait=False)
    c.start_worker("b")
    c.workers[0].await_ready()
    started = time.time()
    fan_out = shapes.FAN_OUT.run({"count": ITEMS})
    parent = shapes.PARENT.run({"seconds": 8.0})
    pid = wait_for(
        lambda: _items_done(c, fan_out.id) >= 50 and _child_step_pid(c, parent.id, fan_out.id),
        90,
        "the child's step to start, and the fan-out to be under way",
    )
    victim = _worker_of(c, int(pid))
    assert victim is not None, f"no worker runs pool process {pid}"
    victim_pool = victim.pool()
    victim.kill()
    fault_at = time.time()
    done_at_kill = _items_done(c, fan_out.id)
    [child] = parent.children()
    assert done_at_kill < ITEMS, "the fan-out ended before the kill (no fault injected)"
    assert child.status() not in TERMINAL, "the child ended before the kill (no fault injected)"
    items_by_victim = int(
        c.sql(
            "SELECT count(*) FROM executions WHERE run_id = %s::uuid AND pid = ANY(%s::int[])",
            (fan_out.id, victim_pool),
        )[0][0]
    )
    assert items_by_victim, "the killed worker ran no item of the fan-out (no fault injected)"
    runs = {"fan_out": fan_out.id, "parent": parent.id, "child": child.id}
    out = c.observe(
        "shapes (default settings): worker SIGKILL mid 1,000-item for_each and mid child run",
        list(runs.values()),
        {fan_out.id: FAN_OUT_STEPS, parent.id: ["prepare"], child.id: ["work"]},
        fault_at,
        started,
        DEADLINE,
        notes={
            "settings": "defaults",
            "items_done_at_kill": done_at_kill,
            "items_run_by_killed_worker": items_by_victim,
            "killed": victim.name,
        },
    )
    out.notes["ended_after_kill_s"] = _ended_after(c, runs, fault_at)
    print(f"runs ended after the kill (s): {out.notes['ended_after_kill_s']}", flush=True)
    out.assert_pass()
    assert out.recovery_seconds is not None and out.recovery_seconds < DEADLINE, out.line()
    _check_fan_out(c, fan_out)
    _check_child(c, parent, child)


@long_only
def test_worker_sigkilled_mid_for_each_fan_out(cluster: Callable[..., FaultCluster]) -> None:
    """Default settings. 1,000 items over two workers; one is SIGKILLed (process group) when a
    tenth are done."""
    c = cluster(defaults=True)
    victim, _other = c.start_worker("a"), c.start_worker("b")
    started = time.time()
    run = shapes.FAN_OUT.run({"count": ITEMS})
    wait_for(lambda: _items_done(c, run.id) >= ITEMS // 10, 60, "a tenth of the items")
    victim.kill()
    fault_at = time.time()
    done_at_kill = _items_done(c, run.id)
    assert done_at_kill < ITEMS, "the fan-out ended before the kill (no fault injected)"
    out = c.observe(
        "shapes (default settings): worker SIGKILL mid 1,000-item for_each",
        [run.id],
        FAN_OUT_STEPS,
        fault_at,
        started,
        DEADLINE,
        notes={"settings": "defaults", "items_done_at_kill": done_at_kill, "killed": victim.name},
    )
    out.assert_pass()
    assert out.recovery_seconds is not None and out.recovery_seconds < DEADLINE, out.line()
    _check_fan_out(c, run)


@long_only
def test_worker_sigkilled_during_a_child_run(cluster: Callable[..., FaultCluster]) -> None:
    """Default settings. The only worker, running the child's 8 s step, is SIGKILLed (process
    group), then a new worker is started.

    The kill comes as soon as the step's body started: when it beats the history's write of the
    step's start (20 ms), history shows the child's step pending, and the reconciler finds its
    claim in Redis (``ops.reconciler``; before, stall detection recovered it after 300 s)."""
    c = cluster(defaults=True)
    c.start_worker("a")
    started = time.time()
    parent = shapes.PARENT.run({"seconds": 8.0})
    pid = wait_for(lambda: _child_step_pid(c, parent.id), 60, "the child's step to start")
    victim = _worker_of(c, pid)
    assert victim is not None, f"no worker runs pool process {pid}"
    victim.kill()
    fault_at = time.time()
    [child] = parent.children()
    assert child.status() not in TERMINAL, "the child ended before the kill (no fault injected)"
    c.start_worker("b")
    out = c.observe(
        "shapes (default settings): worker SIGKILL during a child run",
        [parent.id, child.id],
        {parent.id: ["prepare"], child.id: ["work"]},
        fault_at,
        started,
        DEADLINE,
        notes={"settings": "defaults", "killed": victim.name},
    )
    out.assert_pass()
    assert out.recovery_seconds is not None and out.recovery_seconds < 120, out.line()
    _check_child(c, parent, child)
