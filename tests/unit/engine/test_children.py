"""Child workflows: a step (or each item) runs another workflow; its output is the result."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Workflow, task
from orchestrator.errors import ShapeError
from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline
from tests.unit.engine.harness import Engine

SETTINGS = Settings(task_modules=[], workflows_path=str(Path(__file__).parent / "no-workflows"))


@task
def customers(count: int) -> list[dict[str, Any]]:
    return [{"customer": f"c{i}", "amount": i} for i in range(count)]


@task
def bill(customer: str, amount: int) -> dict[str, Any]:
    if amount < 0:
        raise ValueError(f"cannot bill {customer} {amount}")
    return {"customer": customer, "billed": amount * 10}


@task
def first(records: list[dict[str, Any]]) -> dict[str, Any]:
    return records[0]


@task
def summary(bills: list[dict[str, Any]]) -> int:
    return sum(b["billed"] for b in bills)


BILL_ONE = Workflow("child_bill_one").step("bill", bill)
PER_CUSTOMER = (
    Workflow("child_per_customer")
    .step("list", customers)
    .step("bill", workflow=BILL_ONE, for_each="list")
    .step("total", summary, after="bill")
)
ONCE = (
    Workflow("child_once")
    .step("list", customers)
    .step("first", first, after="list")
    .step("bill", workflow="child_bill_one", after="first")
)


def test_a_child_per_item_gives_the_outputs_in_item_order() -> None:
    _ = BILL_ONE.spec  # registered
    run = run_inline(PER_CUSTOMER, {"count": 3}, settings=SETTINGS)

    assert run.wait() == 30
    children = run.children()
    assert len(children) == 3
    records = [c.record() for c in children]
    assert {r.parent_step_id for r in records} == {"bill[0]", "bill[1]", "bill[2]"}
    assert {r.parent_run_id for r in records} == {run.id}
    assert all(c.status() == RunStatus.SUCCEEDED for c in children)
    bill_step = next(s for s in run.steps() if s.step_id == "bill")
    assert bill_step.result == [
        {"customer": "c0", "billed": 0},
        {"customer": "c1", "billed": 10},
        {"customer": "c2", "billed": 20},
    ]


def test_a_child_run_once_with_the_dependency_result_as_inputs() -> None:
    _ = BILL_ONE.spec
    run = run_inline(ONCE, {"count": 2}, settings=SETTINGS)

    assert run.wait() == {"customer": "c0", "billed": 0}
    assert [c.record().parent_step_id for c in run.children()] == ["bill"]


def test_a_failed_child_fails_the_step_and_the_run() -> None:
    _ = BILL_ONE.spec
    wf = Workflow("child_failing").step("bill", workflow=BILL_ONE)
    run = run_inline(wf, {"customer": "x", "amount": -1}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    step = next(s for s in run.steps() if s.step_id == "bill")
    assert step.status == StepStatus.FAILED
    assert "child run" in (step.error or "") and "failed" in (step.error or "")
    assert run.children()[0].status() == RunStatus.FAILED


def test_the_waiting_step_holds_no_worker_and_cancel_reaches_the_child(engine: Engine) -> None:
    _ = BILL_ONE.spec
    wf = Workflow("child_cancelled").step("bill", workflow=BILL_ONE)
    run = engine.start(wf, {"customer": "x", "amount": 1})
    started = engine.take()  # the parent step's message: it starts the child and returns
    assert list(started) == ["bill"]
    started["bill"].execute()
    [child] = run.children()
    assert child.status() == RunStatus.PENDING
    assert {s.step_id: s.status for s in run.steps()} == {"bill": StepStatus.RUNNING}

    run.cancel()

    assert child.status() == RunStatus.CANCELLED
    engine.finish(run)
    assert run.status() == RunStatus.CANCELLED


def test_an_unregistered_child_and_a_cycle_through_children_are_refused() -> None:
    missing = Workflow("child_missing").step("x", workflow="child_nowhere")
    with pytest.raises(ShapeError, match="not registered"):
        run_inline(missing, {}, settings=SETTINGS)

    Workflow("child_loop_a").step("b", workflow="child_loop_b")
    loop_b = Workflow("child_loop_b").step("a", workflow="child_loop_a")
    with pytest.raises(ShapeError, match="child_loop_b -> child_loop_a -> child_loop_b"):
        run_inline(loop_b, {}, settings=SETTINGS)


def test_pause_and_resume_reach_the_child(engine: Engine) -> None:
    _ = BILL_ONE.spec
    wf = Workflow("child_paused").step("bill", workflow=BILL_ONE)
    run = engine.start(wf, {"customer": "x", "amount": 2})
    engine.take()["bill"].execute()
    [child] = run.children()

    run.pause()
    assert (run.status(), child.status()) == (RunStatus.PAUSED, RunStatus.PAUSED)
    engine.take()["bill"].execute()  # the child's step is parked, not run

    run.resume()
    engine.finish(run)
    assert run.wait() == {"customer": "x", "billed": 20}
    assert child.status() == RunStatus.SUCCEEDED


def test_a_child_that_cannot_take_its_inputs_fails_the_step_naming_it() -> None:
    _ = BILL_ONE.spec
    wf = Workflow("child_bad_inputs").step("bill", workflow=BILL_ONE)
    run = run_inline(wf, {"customer": "x", "amount": 1, "unknown": 2}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    step = next(s for s in run.steps() if s.step_id == "bill")
    assert "cannot start" in (step.error or "") and "child_bill_one" in (step.error or "")


@task
def refuse(customer: str, amount: int) -> None:
    raise PermissionError(f"{customer} may not be billed")


def test_a_failed_parent_cancels_its_child_that_has_not_ended(engine: Engine) -> None:
    _ = BILL_ONE.spec
    wf = Workflow("child_orphaned").step("bill", workflow=BILL_ONE).step("check", refuse)
    run = engine.start(wf, {"customer": "x", "amount": 1})
    started = engine.take()
    started["bill"].execute()  # starts the child, which has not run yet
    [child] = run.children()

    with contextlib.suppress(PermissionError):
        started["check"].execute()  # fails for good: the run fails

    assert run.status() == RunStatus.FAILED
    assert child.status() == RunStatus.CANCELLED
    assert any("parent run" in (detail or "") for _, kind, detail in child.events())


def test_a_child_workflow_the_worker_does_not_know_fails_the_step_at_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run submitted where the child workflow is registered
    from orchestrator.core import registry

    ghost = Workflow("child_ghost").step("bill", bill)
    _ = ghost.spec
    run = (
        Workflow("child_unknown_here")
        .step("bill", workflow=ghost)
        .run({"customer": "x", "amount": 1}, app=engine.app)
    )
    # When the worker that takes the step has no such workflow (a Python workflow defined only
    # in the submitting process)
    monkeypatch.delitem(registry._workflows, "child_ghost")
    engine.finish(run)
    # Then the step fails for good at its first attempt, saying what to do
    assert run.status() == RunStatus.FAILED
    step = engine.steps(run)["bill"]
    assert step.attempts == 1 and step.status == StepStatus.FAILED
    assert "cannot start child workflow 'child_ghost'" in (step.error or "")
    assert "ORCHESTRATOR_TASK_MODULES" in (step.error or "")
