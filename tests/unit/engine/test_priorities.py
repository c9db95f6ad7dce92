"""Run and step priorities in the engine, on in-memory twins: every message of a run carries its
priority, also those a worker publishes later; a step's own wins; a bad one writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator import PriorityError, Workflow, task
from tests.unit.engine.harness import Engine


@task
def pr_first(**_: Any) -> int:
    return 1


@task
def pr_next(value: Any) -> Any:
    return value


@task
def pr_join(values: dict[str, Any]) -> Any:
    return values


def diamond(name: str) -> Workflow:
    return (
        Workflow(name)
        .step("a", pr_first)
        .step("b", pr_next, after="a")
        .step("c", pr_next, after="a", priority=3)
        .step("d", pr_join, after=["b", "c"])
        .step("e", pr_next, after="d", priority=6)
    )


def test_every_message_of_a_run_carries_its_priority_and_a_steps_own_wins(
    engine: Engine,
) -> None:
    # Given a run of priority 8 (Workflow.run) with steps of priority 3 and 6 (d is a chord's
    # body, which Celery publishes without a priority: the publish hook gives it back)
    run = diamond("pr_diamond").run({}, priority=8, app=engine.app)
    seen: dict[str, int] = {}
    # When each message is executed as it comes (later ones published by the "worker")
    while taken := engine.take():
        for step, request in taken.items():
            seen[step] = request.delivery_info["priority"]
            assert request.kwargs["orchestrator"]["priority"] == 8
            request.execute()
    # Then each was published with its priority (the in-memory broker reads it as RabbitMQ does)
    assert seen == {"a": 8, "b": 8, "c": 3, "d": 8, "e": 6}
    assert run.wait(timeout=5) == {"b": 1, "c": 1}


def test_a_priority_out_of_range_writes_nothing(engine: Engine) -> None:
    with pytest.raises(PriorityError, match="workflow 'pr_bad'.*priority 10"):
        diamond("pr_bad").run({}, priority=10, app=engine.app)
    assert engine.history.list_runs("pr_bad", None, 10) == []


@task
def pr_fails(value: Any) -> Any:
    raise RuntimeError(f"no ({value})")


def test_a_retried_run_publishes_at_the_priority_its_run_was_given(engine: Engine) -> None:
    # Given a run of priority 7 whose second step fails for good
    flaky = Workflow("pr_retried").step("a", pr_first).step("b", pr_fails, after="a")
    run = flaky.run({}, priority=7, app=engine.app)
    engine.finish(run)
    assert run.record().priority == 7  # kept in history, not only in the messages
    # When it is retried (a new run, started from what history kept)
    again = run.retry()
    seen = {}
    while taken := engine.take():
        for step, request in taken.items():
            seen[step] = request.delivery_info["priority"]
            request.execute()
    # Then the retried run's messages carry the priority too
    assert again.record().priority == 7
    assert seen == {"b": 7}
