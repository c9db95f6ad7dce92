"""The tasks and workflows of the engine's unit tests; each call of a task is noted in CALLS."""

from __future__ import annotations

from typing import Any

from orchestrator import Workflow, current_run, retry, task

CALLS: list[tuple[str, str, int]] = []  # run id, step id, attempt


def _called() -> None:
    CALLS.append((current_run.run_id, current_run.step_id, current_run.attempt))


@task
def source(start: int) -> int:
    _called()
    return start


@task
def inc(value: int) -> int:
    _called()
    return value + 1


@task
def combine(parents: dict[str, int]) -> int:
    _called()
    return sum(parents.values())


@task
@retry(max_attempts=3, base_delay=5.0, jitter=False)
def unreliable(start: int) -> int:
    _called()
    raise ConnectionError(f"attempt {current_run.attempt}: connection refused")


@task
@retry(max_attempts=3, base_delay=5.0, jitter=False)
def opaque(start: int) -> Any:
    _called()
    return object()


CHAIN = (
    Workflow("engine_chain").step("a", source).step("b", inc, after="a").step("c", inc, after="b")
)
# a and b join at c (which reads its parents' results from run state); d follows b alone
JOIN = (
    Workflow("engine_join")
    .step("a", source)
    .step("b", source)
    .step("c", combine, after=["a", "b"])
    .step("d", inc, after="b")
)
TWO_SINKS = (
    Workflow("engine_two_sinks")
    .step("a", source)
    .step("b", inc, after="a")
    .step("c", inc, after="a")
)
RETRIED = Workflow("engine_retried").step("a", unreliable).step("b", inc, after="a")
UNENCODABLE = (
    Workflow("engine_unencodable")
    .step("a", opaque)
    .step("b", inc, after="a")
    .step("c", inc, after="b")
    .step("z", source)
)
