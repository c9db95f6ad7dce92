"""``queue_timeout`` in the engine, on in-memory twins: a step's message is noted when published
and forgotten when a worker receives it; a note still there when due fails the step and its run
with ``QueueTimeout``; a retry delay does not count as queued."""

from __future__ import annotations

import time
from typing import Any

from orchestrator import Workflow, current_run, retry, task
from orchestrator.engine.queue_timeouts import first_take, member, parse_member
from orchestrator.ops.queue_timeouts import expire_queued
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.memory.queue_timeouts import MemoryQueueTimeouts
from tests.unit.engine.harness import Engine


@task
def qt_first(**_: Any) -> str:
    return "first"


@task
def qt_second(value: Any) -> str:
    return f"{value}+second"


FLAKY: dict[str, int] = {}


@task
@retry(max_attempts=2, base_delay=50.0, jitter=False)
def qt_flaky(**_: Any) -> str:
    FLAKY[current_run.run_id] = FLAKY.get(current_run.run_id, 0) + 1
    if FLAKY[current_run.run_id] == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


def pair(name: str) -> Workflow:
    return (
        Workflow(name)
        .step("first", qt_first, queue_timeout=30)
        .step("second", qt_second, after="first", queue_timeout=30)
    )


def notes(engine: Engine) -> dict[str, float]:
    return dict(engine.rt.queue_timeouts.due(float("inf"), 1000))


def test_a_step_never_received_fails_with_queue_timeout_and_its_run_fails(engine: Engine) -> None:
    # Given a run whose first step's message is published and never received
    run = engine.start(pair("qt_never"), {})
    [entry] = notes(engine)
    assert parse_member(entry) == (run.id, "first", 1)
    # When the reconciler's check runs before and after the step's queue timeout
    assert expire_queued(engine.rt, now=time.time() + 20) == 0
    assert expire_queued(engine.rt, now=time.time() + 31) == 1
    engine.rt.writer.flush(timeout=5)
    # Then the step failed with QueueTimeout naming workflow, step and queue; the run failed
    steps = engine.steps(run)
    assert steps["first"].status == StepStatus.FAILED
    assert "QueueTimeout: workflow 'qt_never', step 'first'" in (steps["first"].error or "")
    assert "on queue 'celery'" in (steps["first"].error or "")
    assert steps["second"].status == StepStatus.SKIPPED
    assert run.status() == RunStatus.FAILED
    # And a late delivery of the message stands down: the step's function is not called
    engine.finish(run)
    after = engine.steps(run)
    assert after["first"].status == StepStatus.FAILED and after["first"].result is None
    assert after["second"].status == StepStatus.SKIPPED


def test_a_received_step_is_forgotten_and_the_next_is_noted_when_ready(engine: Engine) -> None:
    # Given a run of two chained steps under a queue timeout
    run = engine.start(pair("qt_received"), {})
    assert [parse_member(e)[1] for e in notes(engine)] == ["first"]
    # When the first is received and runs
    engine.take()["first"].execute()
    # Then its note is gone and its successor's is there, due from now (not from the submit)
    [(entry, due)] = notes(engine).items()
    assert parse_member(entry)[1] == "second"
    assert due >= time.time() + 29
    engine.finish(run)
    assert notes(engine) == {} and run.status() == RunStatus.SUCCEEDED
    assert expire_queued(engine.rt, now=time.time() + 100) == 0


def test_a_retry_delay_does_not_count_as_queued(engine: Engine) -> None:
    # Given a step with a 50 s retry delay and a 30 s queue timeout
    run = engine.start(Workflow("qt_retry").step("call", qt_flaky, queue_timeout=30), {})
    # When its first attempt fails
    engine.take()["call"].execute()
    # Then its second attempt's note is due 30 s after the delay, not 30 s from now
    [(entry, due)] = notes(engine).items()
    assert parse_member(entry) == (run.id, "call", 2)
    assert due >= time.time() + 79
    assert expire_queued(engine.rt, now=time.time() + 60) == 0
    engine.finish(run)
    assert run.status() == RunStatus.SUCCEEDED


def test_member_and_first_take() -> None:
    ctx = {"run_id": "r", "step_id": "parse", "item": 3, "attempt": 2}
    assert member(ctx) == "r/parse[3]/2" and parse_member("r/parse[3]/2") == ("r", "parse[3]", 2)
    assert first_take(None, 100.0) == 100.0
    assert first_take({"eta": "2030-01-01T00:00:00+00:00"}, 100.0) > 1.8e9
    assert first_take({"eta": "not a time"}, 100.0) == 100.0


def test_the_memory_twin_hands_a_due_note_to_one_taker() -> None:
    store = MemoryQueueTimeouts()
    store.expect("a", 10.0)
    store.expect("b", 5.0)
    store.expect("a", 20.0)  # moved, not doubled
    assert store.due(15.0) == [("b", 5.0)]
    assert store.take("b") and not store.take("b")
    store.received("a")
    assert store.due(100.0) == []


def test_a_paused_run_is_not_timed_out_its_step_is_noted_again(engine: Engine) -> None:
    # Given a run paused while its step's message waits in the queue
    run = engine.start(pair("qt_paused"), {})
    run.pause()
    # When its queue timeout is due
    later = time.time() + 31
    assert expire_queued(engine.rt, now=later) == 0
    # Then nothing failed and the step is noted again, a whole queue timeout later
    [(entry, due)] = notes(engine).items()
    assert parse_member(entry)[1] == "first" and due >= later + 29
    assert run.status() == RunStatus.PAUSED
