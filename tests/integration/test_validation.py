"""Invalid workflows and inputs are refused before anything is written or published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import (
    CycleError,
    DuplicateStepError,
    EmptyWorkflowError,
    InputError,
    ScheduleError,
    UnknownDependencyError,
    UnknownTaskError,
    Workflow,
    WorkflowNotFound,
    list_runs,
    run_workflow,
)
from tests.integration import workload

pytestmark = pytest.mark.integration


def _unknown_task() -> Workflow:
    return Workflow("v-unknown-task").step("a", workload.noop).step("b", "tasks.nope", after="a")


def _duplicate() -> Workflow:
    return Workflow("v-duplicate").step("a", workload.noop).step("a", workload.noop)


def _unknown_dep() -> Workflow:
    return Workflow("v-unknown-dep").step("a", workload.noop).step("b", workload.noop, after="zz")


def _cycle() -> Workflow:
    wf = Workflow("v-cycle").step("a", workload.noop, after="c")
    return wf.step("b", workload.noop, after="a").step("c", workload.noop, after="b")


def _bad_schedule() -> Workflow:
    return Workflow("v-schedule", schedule="0 25 * * *").step("a", workload.noop)


CASES: list[tuple[Callable[[], Workflow], dict[str, Any], type[Exception], list[str]]] = [
    (
        _unknown_task,
        {},
        UnknownTaskError,
        ["v-unknown-task", "'b'", "tasks.nope", "ORCHESTRATOR_TASK_MODULES"],
    ),
    (
        lambda: (
            Workflow("v-celery-task")
            .step("a", workload.noop)
            .step("unlock", "celery.chord_unlock", after="a")
        ),
        {},
        UnknownTaskError,
        ["v-celery-task", "'unlock'", "celery.chord_unlock", "cannot be a workflow step"],
    ),
    (
        lambda: Workflow("v-own-task").step("deadline", "orchestrator.run_deadline"),
        {},
        UnknownTaskError,
        ["v-own-task", "'deadline'", "orchestrator.run_deadline", "ORCHESTRATOR_TASK_MODULES"],
    ),
    (_duplicate, {}, DuplicateStepError, ["v-duplicate", "'a'", "defined twice"]),
    (_unknown_dep, {}, UnknownDependencyError, ["v-unknown-dep", "'b'", "'zz'"]),
    (_cycle, {}, CycleError, ["v-cycle", "a -> b -> c -> a"]),
    (lambda: Workflow("v-empty"), {}, EmptyWorkflowError, ["v-empty", "no steps"]),
    (_bad_schedule, {}, ScheduleError, ["v-schedule", "hour '25'"]),
    (
        lambda: Workflow("v-inputs").step("r", workload.root),
        {"m": 1},
        InputError,
        ["v-inputs", "'r'", "run's inputs", "m"],
    ),
    (
        lambda: Workflow("v-missing").step("r", workload.root),
        {},
        InputError,
        ["v-missing", "'r'", "missing a required argument: 'n'"],
    ),
    (
        lambda: Workflow("v-json").step("r", workload.root),
        {"n": {1, 2}},
        InputError,
        ["v-json", "not JSON-serializable"],
    ),
]


@pytest.mark.parametrize(
    ("build", "inputs", "error", "words"),
    CASES,
    ids=[c[2].__name__ + str(i) for i, c in enumerate(CASES)],
)
def test_invalid_workflow_is_refused_with_a_clear_message(
    build: Callable[[], Workflow],
    inputs: dict[str, Any],
    error: type[Exception],
    words: list[str],
    servers: Any,
    published: Callable[[], list[Any]],
) -> None:
    # Given an invalid workflow or inputs
    wf = build()
    # When it is submitted
    with pytest.raises(error) as raised:
        wf.run(inputs)
    # Then the error names the workflow and step and what is wrong, and nothing was written
    for word in words:
        assert word in str(raised.value)
    assert list_runs(workflow=wf.name) == []
    assert published() == []


def test_unknown_workflow_name_lists_the_known_ones(servers: Any) -> None:
    with pytest.raises(WorkflowNotFound, match="'nope' is not registered.*etl"):
        run_workflow("nope")
