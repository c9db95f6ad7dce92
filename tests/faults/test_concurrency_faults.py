"""A worker SIGKILLed while its run holds the only concurrency slot: recovery ends that run,
which frees the slot, and the run waiting in line starts then (not before), exactly once."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from orchestrator import RunStatus
from orchestrator.core.concurrency import slot_name
from orchestrator.stores.redis.slots import RedisSlots
from tests.faults import concurrency_flows as flows
from tests.faults.harness import FaultCluster
from tests.faults.test_faults import wait_for
from tests.faults.test_shapes_faults import _worker_of

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

DEADLINE = 60.0


def test_worker_sigkilled_while_its_run_holds_the_slot(
    cluster: Callable[..., FaultCluster],
) -> None:
    # Given one run at a time: a run whose step takes 3 s, and a second one in line
    c = cluster(env={"ORCHESTRATOR_TASK_MODULES": flows.TASK_MODULES})
    c.start_worker("a")
    started = time.time()
    first = flows.ONE_AT_A_TIME.run({"seconds": 3.0})
    second = flows.ONE_AT_A_TIME.run({"seconds": 0.1})
    assert second.status() == RunStatus.PENDING
    # When the worker running the first run's step is SIGKILLed, and replaced
    pid = wait_for(
        lambda: c.sql("SELECT pid FROM executions WHERE run_id = %s::uuid", (first.id,)),
        60,
        "the first run's step to start",
    )[0][0]
    victim = _worker_of(c, int(pid))
    assert victim is not None, f"no worker runs pool process {pid}"
    victim.kill()
    fault_at = time.time()
    c.start_worker("b")
    # Then both runs end, each step's effect once, and the second started after the first ended
    out = c.observe(
        "concurrency: worker SIGKILL while its run holds the slot",
        [first.id, second.id],
        ["work"],
        fault_at,
        started,
        DEADLINE,
        notes={"killed": victim.name},
    )
    out.assert_pass()
    assert first.status() == second.status() == RunStatus.SUCCEEDED, c.diagnose(second.id)
    ended = first.record().finished_at
    begun = {s.step_id: s.started_at for s in second.steps()}["work"]
    assert ended is not None and begun is not None and begun >= ended
    slots = RedisSlots(redis.Redis.from_url(c.redis_url))
    assert slots.line(slot_name("faults_one_at_a_time", None)) == ([], [])  # nothing leaked
