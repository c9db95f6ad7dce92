"""``sleep`` and ``wait_for`` steps and signals on a real worker, Redis and PostgreSQL.

One worker with ``-c 1`` consumes the queue of these tests: a sleeping and a waiting run hold
none of its one slot (another run completes meanwhile), a signal sent early is kept, a timeout
fails or skips, a running step is steered by signals, cancel and pause act on a waiting run, and
bad signals are refused with nothing written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import (
    InvalidTransition,
    RunHandle,
    RunNotFound,
    SignalError,
    Workflow,
    WorkflowFailed,
    get_run,
)
from orchestrator.cli import main as cli
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing.workers import Worker
from tests.integration import sleeping_tasks, workload
from tests.integration.conftest import SETTINGS

QUEUE = "sleepers"
MODULES = SETTINGS["ORCHESTRATOR_TASK_MODULES"] + ",tests.integration.sleeping_tasks"
LATE = 2 * 5.0 + 5.0 + 5.0
"""How late a sleep may end here: the delay pump wakes it within ~0.5 s; should that wake-up be
lost, the reconciler's wakes it within wake_grace (2 x ORCHESTRATOR_RECONCILE_INTERVAL, 5 s) and
a pass; plus slack for this busy machine (bench/bench_sleeping.py measures the usual case)."""


@pytest.fixture(scope="module")
def sleeper(start_worker: Callable[..., Worker]) -> Worker:
    """One worker with one process, consuming only this module's queue."""
    return start_worker("sleeper", 1, {"ORCHESTRATOR_TASK_MODULES": MODULES}, ("-Q", QUEUE))


def _name(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:6]}"


def _step(run: RunHandle, step_id: str) -> Any:
    return next(s for s in run.steps() if s.step_id == step_id)


def _until(what: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s")
        time.sleep(0.1)


def _waiting(run: RunHandle, step_id: str) -> bool:
    return _step(run, step_id).status == StepStatus.RUNNING


def test_sleeping_and_waiting_runs_hold_no_worker_slot(sleeper: Worker) -> None:
    sleeps = Workflow(_name("nap")).sleep("nap", 4, queue=QUEUE)
    sleeps.step("after", sleeping_tasks.echo, after="nap", queue=QUEUE)
    waits = Workflow(_name("approve"))
    waits.wait_for("approval", signal="approved", timeout=120, queue=QUEUE)
    waits.step("send", sleeping_tasks.echo, after="approval", queue=QUEUE)
    quick = Workflow(_name("quick")).step("double", workload.double, queue=QUEUE)

    napping, waiting = sleeps.run({}), waits.run({})
    _until(lambda: _waiting(napping, "nap") and _waiting(waiting, "approval"))
    assert quick.run({"n": 21}).wait(timeout=30) == 42  # the one slot is free
    assert not napping.status().terminal and not waiting.status().terminal

    waiting.signal("approved", {"by": "ann"}, sender="ann")
    assert waiting.wait(timeout=30) == {"by": "ann"}
    assert napping.wait(timeout=30) is None  # a root sleep passes None on
    nap = _step(napping, "nap")
    slept = (nap.finished_at - nap.started_at).total_seconds()
    assert 4.0 <= slept < 4.0 + LATE, slept
    assert any(kind == "signal" and "ann" in (d or "") for _, kind, d in waiting.events())


def test_a_signal_sent_before_its_step_is_reached_is_kept(sleeper: Worker) -> None:
    wf = Workflow(_name("early")).step("first", workload.double, queue=QUEUE)
    wf.sleep("pause", 1, after="first", queue=QUEUE)
    wf.wait_for("go", signal="go", after="pause", timeout=60, queue=QUEUE)
    wf.step("use", sleeping_tasks.echo, after="go", queue=QUEUE)
    run = wf.run({"n": 1})
    assert cli(["signal", run.id, "go", "-d", '{"n": 7}']) == 0  # before `go` is reached
    assert run.wait(timeout=30) == {"n": 7}
    assert _step(run, "pause").result == 2  # a sleep passes its dependency's result on


def test_a_timeout_fails_the_run_or_skips_the_step(sleeper: Worker) -> None:
    fails = Workflow(_name("fails"))
    fails.wait_for("approval", signal="approved", timeout=2, queue=QUEUE)
    fails.step("send", sleeping_tasks.echo, after="approval", queue=QUEUE)
    skips = Workflow(_name("skips"))
    skips.wait_for("approval", signal="approved", timeout=2, on_timeout="skip", queue=QUEUE)
    skips.step("send", sleeping_tasks.echo, after="approval", queue=QUEUE)
    failing, skipping = fails.run({}), skips.run({})

    with pytest.raises(WorkflowFailed, match="no signal 'approved' within 2s"):
        failing.wait(timeout=30)
    assert _step(failing, "send").status in (StepStatus.SKIPPED, StepStatus.CANCELLED)
    skipping.wait(timeout=30)
    assert skipping.status() == RunStatus.SUCCEEDED
    assert [_step(skipping, s).status for s in ("approval", "send")] == [StepStatus.SKIPPED] * 2


def test_a_running_step_sees_the_signals_sent_while_it_runs(sleeper: Worker) -> None:
    wf = Workflow(_name("steer")).step("work", sleeping_tasks.steered, queue=QUEUE)
    run = wf.run({"seconds": 30})
    _until(lambda: _waiting(run, "work"))
    run.signal("steer", {"speed": 2})
    run.signal("steer", "stop")
    assert run.wait(timeout=30) == [{"speed": 2}, "stop"]


def test_cancel_ends_a_waiting_run_and_pause_holds_a_sleep(sleeper: Worker) -> None:
    waits = Workflow(_name("cancelled")).wait_for("approval", signal="approved", queue=QUEUE)
    waiting = waits.run({})
    _until(lambda: _waiting(waiting, "approval"))
    began = time.monotonic()
    assert waiting.cancel()
    assert waiting.status() == RunStatus.CANCELLED and time.monotonic() - began < 5
    assert _step(waiting, "approval").status == StepStatus.CANCELLED
    with pytest.raises(InvalidTransition):
        waiting.signal("approved", 1)

    sleeps = Workflow(_name("paused")).sleep("nap", 2, queue=QUEUE)
    sleeps.step("after", sleeping_tasks.echo, after="nap", queue=QUEUE)
    napping = sleeps.run({})
    _until(lambda: _waiting(napping, "nap"))
    napping.pause()
    time.sleep(4)  # past its time: the wake-up is held while the run is paused
    assert napping.status() == RunStatus.PAUSED and _waiting(napping, "nap")
    napping.resume()
    assert napping.wait(timeout=30) is None


def test_bad_signals_are_named_errors_with_nothing_written(sleeper: Worker) -> None:
    with pytest.raises(RunNotFound):
        get_run(str(uuid.uuid4())).signal("approved", 1)
    waits = Workflow(_name("bad")).wait_for("approval", signal="approved", queue=QUEUE)
    run = waits.run({})
    with pytest.raises(SignalError, match="not JSON"):
        run.signal("approved", {"when": object()})
    with pytest.raises(SignalError, match="no name"):
        run.signal("", 1)
    assert cli(["signal", run.id, "approved", "-d", "{not json"]) == 1
    assert run.signals() == [] and all(kind != "signal" for _, kind, _ in run.events())
    run.cancel()
