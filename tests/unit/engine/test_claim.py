"""Claiming a step before it runs: one delivery runs it, whatever the broker delivers."""

from __future__ import annotations

import subprocess
import sys
import time

from orchestrator.engine.canvas import CanvasBuilder
from orchestrator.engine.leases import WORKER_TAG
from orchestrator.engine.services import PlanKey
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing.inline import HOSTNAME
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import CHAIN, JOIN


def test_a_step_delivered_twice_runs_once(engine: Engine) -> None:
    # Given a run whose first step's message is delivered, then delivered again (ack lost)
    run = engine.start(CHAIN, {"start": 1})
    a = engine.take()["a"]
    a.execute()
    a.execute()
    # Then the step ran once and what follows it was published once
    assert calls(run) == [("a", 1)]
    assert list(engine.take()) == ["b"]


def test_a_step_another_live_delivery_holds_is_not_run(engine: Engine) -> None:
    # Given a step whose attempt a delivery on another host holds
    run = engine.start(CHAIN, {"start": 1})
    engine.state.claim(run.id, "a", 1, "elsewhere@host:4242:abcd", 30_000, [])
    # When a copy of its message is delivered here
    engine.take()["a"].execute()
    # Then it is not run (the holder's end moves the run on)
    assert calls(run) == []
    assert engine.steps(run)["a"].status == StepStatus.PENDING
    assert engine.take() == {}


def test_a_late_copy_of_an_earlier_attempt_is_not_run(engine: Engine) -> None:
    # Given a step whose second attempt was scheduled
    run = engine.start(CHAIN, {"start": 1})
    engine.state.expect_retry(run.id, "a", 2, {}, time.time())
    # When a copy of its first attempt's message is delivered
    engine.take()["a"].execute()
    # Then it is stale: not run
    assert calls(run) == []


def test_a_step_held_by_a_dead_pool_process_of_this_host_is_taken_over(engine: Engine) -> None:
    # Given a step whose lease a pool process of this worker holds, a process that was killed
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    run = engine.start(CHAIN, {"start": 1})
    engine.state.claim(
        run.id, "a", 1, f"{HOSTNAME}:{done.stdout.strip()}:{WORKER_TAG}-dead", 30_000, []
    )
    # When its message is delivered again
    engine.take()["a"].execute()
    # Then this delivery takes the lease over and runs the step, its second delivery
    assert calls(run) == [("a", 1)]
    assert engine.steps(run)["a"].status == StepStatus.SUCCEEDED


def test_a_join_reads_its_parents_results_from_history_when_run_state_lost_them(
    engine: Engine,
) -> None:
    # Given a join whose parents succeeded, then run state lost everything (Redis restarted)
    run = engine.start(JOIN, {"start": 2})
    for request in engine.take().values():
        request.execute()
    engine.state.forget_run(run.id)
    # When the run goes on
    engine.finish(run)
    # Then the join got its parents' results from history
    assert run.wait() == {"c": 4, "d": 3}
    assert calls(run).count(("c", 1)) == 1


def test_a_join_whose_parents_results_are_nowhere_fails_its_run(engine: Engine) -> None:
    # Given a join's message delivered before its parents ran (their results are nowhere)
    run = engine.start(JOIN, {"start": 2})
    spec, plan = engine.rt.plan(PlanKey(run.record().workflow_version))
    CanvasBuilder(engine.app, spec, plan, run.id, {}).signature("c").apply_async()
    # When it is delivered
    engine.take()["c"].execute()
    # Then the step fails without running, with a dead letter, and so does its run
    assert calls(run) == []
    record = run.record()
    assert (record.status, record.error_step) == (RunStatus.FAILED, "c")
    assert "neither in Redis nor in history" in (engine.steps(run)["c"].error or "")
    assert [(d.step_id, d.reason) for d in engine.history.dead_letters()] == [
        ("c", "missing_result")
    ]
