"""Faults during run-time shapes: a worker SIGKILLed mid ``for_each`` fan-out and mid child run.

The steps and workflows are in ``tests/faults/shapes.py`` (imported by the workers too, so the
child workflow is registered there). Pass bar as in ``test_faults.py``: every run ends
succeeded, nothing lost or stuck, and every step and every item wrote its effect exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from orchestrator import RunStatus
from orchestrator.testing.workers import Worker
from tests.faults import shapes
from tests.faults.harness import TERMINAL, FaultCluster
from tests.faults.test_faults import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

ITEMS = 1000
DEADLINE = 60.0  # seconds, from the kill, for the runs to end


def _shapes_cluster(cluster: Callable[..., FaultCluster]) -> FaultCluster:
    return cluster(env={"ORCHESTRATOR_TASK_MODULES": shapes.SHAPES_TASK_MODULES})


def _effects_per_step(c: FaultCluster, run_id: str) -> dict[str, int]:
    rows = c.sql(
        "SELECT step_id, count(*) FROM effects WHERE run_id = %s::uuid GROUP BY 1", (run_id,)
    )
    return {step: int(n) for step, n in rows}


def _worker_of(c: FaultCluster, pid: int) -> Worker | None:
    return next((w for w in list(c.workers) if pid in w.pool()), None)


def test_worker_sigkilled_mid_for_each_fan_out(cluster: Callable[..., FaultCluster]) -> None:
    """1,000 items over two workers; one is SIGKILLed (process group) when a tenth are done."""
    c = _shapes_cluster(cluster)
    victim, _other = c.start_worker("a"), c.start_worker("b")
    started = time.time()
    run = shapes.FAN_OUT.run({"count": ITEMS})
    done = "SELECT count(*) FROM effects WHERE run_id = %s::uuid AND step_id LIKE 'work[%%'"
    wait_for(lambda: int(c.sql(done, (run.id,))[0][0]) >= ITEMS // 10, 60, "a tenth of the items")
    victim.kill()
    fault_at = time.time()
    done_at_kill = int(c.sql(done, (run.id,))[0][0])
    assert done_at_kill < ITEMS, "the fan-out ended before the kill (no fault injected)"
    steps = ["list", *(f"work[{i}]" for i in range(ITEMS)), "sink"]
    out = c.observe(
        "shapes: worker SIGKILL mid 1,000-item for_each",
        [run.id],
        steps,
        fault_at,
        started,
        DEADLINE,
        notes={"items_done_at_kill": done_at_kill, "killed": victim.name},
    )
    out.assert_pass()
    assert out.recovery_seconds is not None and out.recovery_seconds < DEADLINE, out.line()
    assert run.status() == RunStatus.SUCCEEDED, c.diagnose(run.id)
    per_step = _effects_per_step(c, run.id)
    assert {s: n for s, n in per_step.items() if n != 1} == {}, "an effect done twice"
    assert sorted(per_step) == sorted(steps), "an item without its effect"
    mapped = {s.step_id: s for s in run.steps()}["work"]
    assert mapped.status == "succeeded"
    assert mapped.result == [f"work[{i}]" for i in range(ITEMS)]  # every item, in item order
    assert run.output == ITEMS  # the sink saw the 1,000 results


def test_worker_sigkilled_during_a_child_run(cluster: Callable[..., FaultCluster]) -> None:
    """The worker running the child's 2 s step is SIGKILLed (process group), then replaced."""
    c = _shapes_cluster(cluster)
    c.start_worker("a")
    started = time.time()
    parent = shapes.PARENT.run({"seconds": 2.0})
    pid = wait_for(
        lambda: c.sql(
            "SELECT pid FROM executions WHERE step_id = 'work' AND run_id <> %s::uuid",
            (parent.id,),
        ),
        60,
        "the child's step to start",
    )[0][0]
    victim = _worker_of(c, int(pid))
    assert victim is not None, f"no worker runs pool process {pid}"
    victim.kill()
    fault_at = time.time()
    [child] = parent.children()
    assert child.status() not in TERMINAL, "the child ended before the kill (no fault injected)"
    c.start_worker("b")
    out = c.observe(
        "shapes: worker SIGKILL during a child run",
        [parent.id, child.id],
        {parent.id: ["prepare"], child.id: ["work"]},
        fault_at,
        started,
        DEADLINE,
        notes={"killed": victim.name},
    )
    out.assert_pass()
    assert out.recovery_seconds is not None and out.recovery_seconds < DEADLINE, out.line()
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
