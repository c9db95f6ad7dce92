"""``sleep`` and ``wait_for`` steps and signals, on the in-memory twins: a step parks (no
message left to execute), its wake-up ends it once, signals are kept, a timeout fails or skips,
a run that ends cancels what waits, and bad input is refused with nothing written."""

from __future__ import annotations

import time
from typing import Any

import pytest

from orchestrator import InvalidTransition, RunNotFound, SignalError, WaitError, Workflow, task
from orchestrator.core.spec import parse_spec
from orchestrator.engine.signals import send_signal
from orchestrator.engine.sleeping import wake_due
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline
from tests.unit.engine.harness import SETTINGS, Engine
from tests.unit.engine.steps import inc, source


@task
def steered(value: int) -> list[Any]:
    from orchestrator import current_run

    return current_run.signals("steer")


SLEEPY = (
    Workflow("unit_sleepy")
    .step("a", source)
    .sleep("nap", 60, after="a")
    .step("b", inc, after="nap")
)
APPROVAL = (
    Workflow("unit_approval")
    .step("a", source)
    .wait_for("ok", signal="approved", after="a", timeout=300)
    .step("b", steered, after="ok")
)
SKIPPING = (
    Workflow("unit_skipping")
    .step("a", source)
    .wait_for("ok", signal="approved", after="a", timeout=300, on_timeout="skip")
    .step("b", inc, after="ok")
)


def _drain(engine: Engine) -> None:
    """Execute what is due now (not what waits in the delay store)."""
    while taken := engine.worker.take():
        for request in taken:
            request.execute()


def test_a_sleep_parks_then_passes_its_dependency_result_on() -> None:
    run = run_inline(SLEEPY, {"start": 1}, settings=SETTINGS)  # the harness skips the wait
    assert run.status() == RunStatus.SUCCEEDED
    assert run.wait() == 2


def test_a_sleeping_step_holds_nothing_and_ends_once_at_its_time(engine: Engine) -> None:
    run = engine.start(SLEEPY, {"start": 1})
    _drain(engine)
    steps = engine.steps(run)
    assert steps["nap"].status == StepStatus.RUNNING and steps["b"].status == StepStatus.PENDING
    [parked] = engine.rt.waits.parked(run.id)
    assert parked.due is not None and engine.take() == {}  # its wake-up waits for its time
    # the reconciler does not wake it before its time
    assert wake_due(engine.rt) == 0
    engine.finish(run)  # the delay store's wake-up is delivered at its time
    assert run.wait() == 2
    assert engine.rt.waits.parked(run.id) == []


def test_a_signal_sent_before_the_step_is_reached_is_kept(engine: Engine) -> None:
    run = engine.start(APPROVAL, {"start": 1})
    sent = run.signal("approved", {"by": "ann"}, sender="ann")
    assert sent.size == len('{"by": "ann"}') and sent.sender == "ann"
    run.signal("steer", 1)
    engine.finish(run)
    assert engine.steps(run)["ok"].result == {"by": "ann"}
    assert run.wait() == [1]
    assert "signal" in [kind for _, kind, _ in run.events()]


def test_the_first_signal_of_the_name_ends_the_wait(engine: Engine) -> None:
    run = engine.start(APPROVAL, {"start": 1})
    _drain(engine)
    assert engine.steps(run)["ok"].status == StepStatus.RUNNING
    run.signal("approved", "first")
    run.signal("approved", "second")
    engine.finish(run)
    assert engine.steps(run)["ok"].result == "first"
    assert run.status() == RunStatus.SUCCEEDED


def test_a_timeout_fails_the_run_or_skips_the_step(engine: Engine) -> None:
    failing = engine.start(APPROVAL, {"start": 1})
    engine.finish(failing)
    assert failing.status() == RunStatus.FAILED
    assert "no signal 'approved' within 300s" in (engine.steps(failing)["ok"].error or "")
    skipping = engine.start(SKIPPING, {"start": 1})
    engine.finish(skipping)
    steps = engine.steps(skipping)
    assert steps["ok"].status == StepStatus.SKIPPED and steps["b"].status == StepStatus.SKIPPED


def test_cancel_while_waiting_cancels_the_step_and_its_wake_up_stands_down(engine: Engine) -> None:
    run = engine.start(APPROVAL, {"start": 1})
    _drain(engine)
    assert run.cancel()
    assert engine.steps(run)["ok"].status == StepStatus.CANCELLED
    assert engine.rt.waits.parked(run.id) == []
    engine.finish(run)  # the timer's wake-up is delivered and stands down
    assert run.status() == RunStatus.CANCELLED
    with pytest.raises(InvalidTransition):
        run.signal("approved", 1)
    assert run.signals() == []


def test_pause_holds_the_wake_up_until_resume(engine: Engine) -> None:
    run = engine.start(SLEEPY, {"start": 1})
    _drain(engine)
    run.pause()
    engine.finish(run)  # the wake-up is parked with the paused run
    assert run.status() == RunStatus.PAUSED
    assert engine.steps(run)["nap"].status == StepStatus.RUNNING
    run.resume()
    engine.finish(run)
    assert run.wait() == 2


def test_a_lost_wake_up_is_published_by_the_reconciler(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = engine.start(APPROVAL, {"start": 1})
    _drain(engine)
    engine.rt.waits.add_signal(run.id, "approved", "late", "test", 6)  # no wake-up published
    assert engine.take() == {}
    assert wake_due(engine.rt) == 0  # arrived less than a grace period ago
    monkeypatch.setattr(engine.rt.settings, "reconcile_interval", 0.0)  # no grace
    assert wake_due(engine.rt) == 1
    engine.finish(run)
    assert engine.steps(run)["ok"].result == "late"


def test_bad_signals_are_refused_with_nothing_written(engine: Engine) -> None:
    run = engine.start(APPROVAL, {"start": 1})
    with pytest.raises(SignalError, match="no name"):
        run.signal("", 1)
    with pytest.raises(SignalError, match="not JSON"):
        run.signal("approved", object())
    with pytest.raises(RunNotFound):
        send_signal(engine.rt, "00000000-0000-0000-0000-000000000000", "approved", 1)
    assert run.signals() == []
    assert "signal" not in [kind for _, kind, _ in run.events()]


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"id": "w", "wait_for": ""}, "no signal name"),
        ({"id": "w", "wait_for": None}, "no signal name"),
        ({"id": "w", "sleep": -5}, "positive number of seconds"),
        ({"id": "w", "sleep": 0}, "positive number of seconds"),
        ({"id": "w", "wait_for": "x", "timeout": 5, "on_timeout": "later"}, "'fail' or 'skip'"),
        ({"id": "w", "wait_for": "x", "on_timeout": "skip"}, "needs a timeout"),
        ({"id": "w", "sleep": 5, "wait_for": "x"}, "both"),
        ({"id": "w", "sleep": 5, "task": "tasks.etl.extract"}, "runs no task"),
    ],
)
def test_bad_wait_steps_are_named_errors(step: dict[str, Any], problem: str) -> None:
    with pytest.raises(WaitError, match=problem) as caught:
        parse_spec({"name": "bad_wait", "steps": [step]})
    assert "workflow 'bad_wait', step 'w'" in str(caught.value)


def test_python_wait_for_without_a_signal_is_a_named_error() -> None:
    with pytest.raises(WaitError, match="no signal name"):
        Workflow("bad_python_wait").wait_for("approval", signal="")


def test_a_parked_step_says_what_it_waits_for(engine: Engine) -> None:
    sleeping, waiting = engine.start(SLEEPY, {"start": 1}), engine.start(APPROVAL, {"start": 1})
    _drain(engine)
    [nap] = [s for s in sleeping.pending() if s.step_id == "nap"]
    assert nap.waiting_for == "sleep" and (nap.waiting_detail or "").startswith("sleeping until")
    [ok] = [s for s in waiting.pending() if s.step_id == "ok"]
    assert ok.waiting_for == "signal"
    assert "signal 'approved', until" in (ok.waiting_detail or "")
    assert f"orchestrator signal {waiting.id} approved" in (ok.waiting_detail or "")


def test_yaml_sleep_and_wait_for_build_the_same_steps_as_python() -> None:
    spec = parse_spec(
        {
            "name": "yaml_waits",
            "steps": [
                {"id": "cool_down", "sleep": 3600},
                {
                    "id": "approval",
                    "wait_for": "approved",
                    "after": ["cool_down"],
                    "timeout": 86400,
                    "on_timeout": "skip",
                },
            ],
        }
    )
    python = Workflow("yaml_waits").sleep("cool_down", 3600)
    python.wait_for(
        "approval", signal="approved", after="cool_down", timeout=86400, on_timeout="skip"
    )
    assert spec.steps == python.spec.steps
    assert spec.step("approval").task == spec.step("cool_down").task == "orchestrator.wait"


def test_step_builds_wait_steps_and_a_wait_for_timeout_is_no_time_limit() -> None:
    from orchestrator import Step
    from orchestrator.engine.canvas import step_options

    wf = Workflow(
        "step_waits",
        steps=[Step("nap", sleep=5), Step("ok", wait_for="go", after="nap", timeout=2)],
    )
    assert [s.task for s in wf.spec.steps] == ["orchestrator.wait"] * 2
    assert "time_limit" not in step_options(wf.spec.step("ok"))


def test_a_sleep_whose_wake_up_was_lost_is_woken_once_past_due(engine: Engine) -> None:
    from dataclasses import replace

    from orchestrator.stores.memory.waits import MemoryWaits

    run = engine.start(SLEEPY, {"start": 1})
    _drain(engine)
    engine.worker._later.clear()  # the delay store's wake-up is lost (Redis restarted empty)
    waits = engine.rt.waits
    assert isinstance(waits, MemoryWaits)
    assert wake_due(engine.rt) == 0  # not due yet
    key = (run.id, "nap")
    waits._parked[key] = replace(waits._parked[key], due=time.time() - 30)  # its time passed
    assert wake_due(engine.rt) == 1 and wake_due(engine.rt) == 0  # once per grace period
    engine.finish(run)
    assert run.wait() == 2 and engine.steps(run)["nap"].status == StepStatus.SUCCEEDED
