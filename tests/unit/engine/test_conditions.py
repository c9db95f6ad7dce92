"""Conditions: ``when`` (CEL), ``trigger``, skip propagation and ``on_failure``, on the twins,
with the tasks of their integration tests (``tests.integration.shapes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import Workflow, task
from orchestrator.core.planner import build_plan
from orchestrator.errors import ConditionError, UnknownTaskError
from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline
from tests.integration.shapes import explode, publish, report, review, score

SETTINGS = Settings(task_modules=[], workflows_path=str(Path(__file__).parent / "no-workflows"))
HOOK_CALLS: list[dict[str, Any]] = []


@task
def after_review(text: str) -> str:
    return text + ", then filed"


@task
def cleanup(failure: dict[str, Any]) -> None:
    HOOK_CALLS.append(failure)


def branching(name: str) -> Workflow:
    return (
        Workflow(name)
        .step("score", score)
        .step("review", review, after="score", when="score.value < 0.5 && inputs.mode == 'strict'")
        .step("file", after_review, after="review")
        .step("publish", publish, after="score", when="score.value >= 0.5")
        .step("report", report, after=["file", "publish"], trigger="none_failed")
    )


BRANCHING = branching("cond_branching")


def statuses(run: Any) -> dict[str, StepStatus]:
    return {s.step_id: s.status for s in run.steps()}


def test_a_false_when_skips_its_branch_and_none_failed_joins_the_other() -> None:
    run = run_inline(BRANCHING, {"value": 0.9, "mode": "strict"}, settings=SETTINGS)

    assert run.status() == RunStatus.SUCCEEDED
    assert statuses(run) == {
        "score": StepStatus.SUCCEEDED,
        "review": StepStatus.SKIPPED,
        "file": StepStatus.SKIPPED,
        "publish": StepStatus.SUCCEEDED,
        "report": StepStatus.SUCCEEDED,
    }
    # the skipped dependency reaches the join as None
    assert run.wait() == {"file": None, "publish": "published 0.9"}


def test_the_other_branch_runs_when_its_condition_holds() -> None:
    run = run_inline(BRANCHING, {"value": 0.2, "mode": "strict"}, settings=SETTINGS)

    assert run.wait() == {"file": "reviewed 0.2, then filed", "publish": None}
    assert statuses(run)["publish"] == StepStatus.SKIPPED


def test_all_succeeded_skips_a_join_after_a_skipped_branch_and_the_run_still_ends() -> None:
    wf = (
        Workflow("cond_all_succeeded")
        .step("score", score)
        .step("publish", publish, after="score", when="score.value >= 0.5")
        .step("report", report, after=["score", "publish"])
    )
    run = run_inline(wf, {"value": 0.1}, settings=SETTINGS)

    assert run.status() == RunStatus.SUCCEEDED
    assert statuses(run) == {
        "score": StepStatus.SUCCEEDED,
        "publish": StepStatus.SKIPPED,
        "report": StepStatus.SKIPPED,
    }
    assert run.wait() is None


def test_none_failed_is_skipped_when_every_dependency_was_skipped() -> None:
    run = run_inline(BRANCHING, {"value": 0.2, "mode": "lenient"}, settings=SETTINGS)

    assert run.status() == RunStatus.SUCCEEDED
    assert statuses(run)["report"] == StepStatus.SKIPPED
    assert {s for s, v in statuses(run).items() if v == StepStatus.SKIPPED} == {
        "review",
        "file",
        "publish",
        "report",
    }


def test_a_root_step_condition_reads_the_inputs() -> None:
    wf = (
        Workflow("cond_root")
        .step("score", score, when="inputs.value > 1.0")
        .step("publish", publish, after="score")
    )
    skipped = run_inline(wf, {"value": 0.5}, settings=SETTINGS)
    ran = run_inline(wf, {"value": 2.0}, settings=SETTINGS)

    assert (skipped.status(), ran.status()) == (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED)
    assert set(statuses(skipped).values()) == {StepStatus.SKIPPED}
    assert ran.wait() == "published 2.0"


def test_a_condition_that_cannot_be_evaluated_fails_the_step_naming_it() -> None:
    wf = (
        Workflow("cond_bad_eval")
        .step("score", score)
        .step("publish", publish, after="score", when="score.missing > 1.0")
    )
    run = run_inline(wf, {"value": 0.5}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    publish_step = next(s for s in run.steps() if s.step_id == "publish")
    assert publish_step.status == StepStatus.FAILED
    assert "cond_bad_eval" in (publish_step.error or "")
    assert "`when`" in (publish_step.error or "")


@pytest.mark.parametrize(
    ("when", "found"),
    [("score.value <", "does not parse as CEL"), ("scor.value < 1", "'scor'")],
)
def test_a_when_that_does_not_parse_or_names_an_unknown_value_is_refused(
    when: str, found: str
) -> None:
    wf = Workflow("cond_refused").step("score", score).step("p", publish, after="score", when=when)

    with pytest.raises(ConditionError, match=found) as caught:
        _ = wf.spec
    assert (caught.value.workflow, caught.value.step) == ("cond_refused", "p")


def test_macro_variables_are_not_unknown_names() -> None:
    wf = (
        Workflow("cond_macro")
        .step("score", score)
        .step("p", publish, after="score", when="[1, 2].all(x, x > 0) && score.value > 0.0")
    )
    assert wf.spec.step("p").when is not None


def test_conditional_steps_and_their_dependents_start_segments_of_their_own() -> None:
    plan = build_plan(BRANCHING.spec)

    assert {s for s in plan.steps if plan.steps[s].mode == "fetch"} == {
        "review",
        "file",
        "publish",
        "report",
    }


def test_on_failure_is_called_once_with_the_failure_and_the_run_stays_failed() -> None:
    HOOK_CALLS.clear()
    wf = Workflow("cond_on_failure", on_failure=cleanup).step("score", explode)

    run = run_inline(wf, {"value": 0.5}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    assert [
        {
            "run_id": run.id,
            "workflow": "cond_on_failure",
            "step": "score",
            "error": "RuntimeError: cannot score 0.5",
        }
    ] == HOOK_CALLS


def test_on_failure_is_not_called_for_a_run_that_succeeded() -> None:
    HOOK_CALLS.clear()
    wf = Workflow("cond_on_failure_ok", on_failure=cleanup).step("score", score)

    assert run_inline(wf, {"value": 0.5}, settings=SETTINGS).status() == RunStatus.SUCCEEDED
    assert HOOK_CALLS == []


def test_an_unregistered_on_failure_task_is_refused() -> None:
    wf = Workflow("cond_on_failure_unknown", on_failure="tests.nowhere").step("score", score)

    with pytest.raises(UnknownTaskError, match="on_failure"):
        run_inline(wf, {"value": 0.5}, settings=SETTINGS)


def test_yaml_names_when_trigger_and_on_failure() -> None:
    from orchestrator.core.spec import parse_spec

    spec = parse_spec(
        {
            "name": "cond_yaml",
            "on_failure": "tasks.x.cleanup",
            "steps": [
                {"id": "score", "task": "t.score"},
                {"id": "p", "task": "t.publish", "after": ["score"], "when": "score.value > 1"},
                {"id": "r", "task": "t.report", "after": ["p"], "trigger": "none_failed"},
            ],
        }
    )
    assert (spec.on_failure, spec.step("p").when, spec.step("r").trigger) == (
        "tasks.x.cleanup",
        "score.value > 1",
        "none_failed",
    )
