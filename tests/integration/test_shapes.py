"""Run-time shapes end to end on real Redis, PostgreSQL and a worker: conditions, on_failure."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from orchestrator import InvalidTransition, RunStatus, WorkflowFailed
from tests.integration import lagging, shapes
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration

MODULES = "tasks,tests.integration.workload,tests.integration.shapes"


@pytest.fixture(scope="module")
def shapes_worker(start_worker: Callable[..., Any]) -> Iterator[Any]:
    worker = start_worker("shapes", env={"ORCHESTRATOR_TASK_MODULES": MODULES})
    yield worker
    worker.stop()


def test_a_false_condition_skips_its_branch_and_the_join_runs(shapes_worker: Any) -> None:
    run = shapes.BRANCHING.run({"value": 0.9, "mode": "strict"})

    assert run.wait(timeout=30) == {"review": None, "publish": "published 0.9"}
    assert run.status() == RunStatus.SUCCEEDED
    assert {s.step_id: s.status for s in run.steps()} == {
        "score": "succeeded",
        "review": "skipped",
        "publish": "succeeded",
        "report": "succeeded",
    }


def test_on_failure_is_called_once_and_the_run_stays_failed(
    shapes_worker: Any, servers: dict[str, str]
) -> None:
    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    client.delete(shapes.HOOK_KEY)

    run = shapes.FAILING.run({"value": 0.5})

    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)
    calls = eventually(lambda: client.lrange(shapes.HOOK_KEY, 0, -1), 20, "on_failure")
    assert [json.loads(c) for c in calls] == [
        {
            "run_id": run.id,
            "workflow": "shapes_failing",
            "step": "score",
            "error": "RuntimeError: cannot score 0.5",
        }
    ]
    assert run.status() == RunStatus.FAILED


def _fan_out(count: int, timeout: float) -> tuple[Any, float]:
    started = time.monotonic()
    run = shapes.FAN_OUT.run({"count": count})
    output = run.wait(timeout=timeout)
    assert output == {"count": count, "sum": sum(n * n for n in range(count))}
    return run, time.monotonic() - started


def test_for_each_maps_items_with_messages_that_do_not_grow(
    shapes_worker: Any, published: Callable[[], list[tuple[str, int]]]
) -> None:
    run, _ = _fan_out(100, 30)
    largest_100 = max(size for _, size in published())
    steps = {s.step_id: s for s in run.steps()}
    assert len(steps) == 3 + 100
    assert steps["square[7]"].status == "succeeded" and steps["square[7]"].result == 49
    assert steps["square"].result == [n * n for n in range(100)]

    many = int(os.environ.get("ORCHESTRATOR_TEST_ITEMS", "2000"))  # 10000 to measure
    run, seconds = _fan_out(many, 300)
    largest = max(size for _, size in published())
    print(
        f"\n{many} items: {seconds:.1f}s; largest message: {largest_100} B with 100 items, "
        f"{largest} B with {many}"
    )
    assert largest <= largest_100 + 64  # only the digits of the index and the count


@pytest.mark.parametrize(
    ("workflow", "inputs", "found"),
    [
        (
            shapes.NOT_A_LIST,
            {"value": 0.5},
            "for_each needs a list, but step 'list' returned a value of type dict",
        ),
        (
            shapes.TOO_MANY,
            {"count": 4},
            "for_each over 4 items of step 'list' is more than max_items=3",
        ),
    ],
    ids=["not-a-list", "over-max-items"],
)
def test_a_fan_out_over_a_non_list_or_too_many_items_fails_its_step_and_run(
    shapes_worker: Any, workflow: Any, inputs: dict[str, Any], found: str
) -> None:
    run = workflow.run(inputs)

    with pytest.raises(WorkflowFailed) as failed:
        run.wait(timeout=30)
    assert (failed.value.status, failed.value.step) == ("failed", "square")
    expected = {"list": "succeeded", "square": "failed", "tally": "skipped"}  # and no item
    # history is written in batches by each worker process: the success of ``list`` (another
    # pool process) may land after the run's failure, which presumed it skipped meanwhile
    eventually(
        lambda: {s.step_id: s.status for s in run.steps()} == expected, 10, "history to settle"
    )
    error = {s.step_id: s for s in run.steps()}["square"].error or ""
    assert found in error and f"workflow {workflow.name!r}, step 'square'" in error


def test_a_child_workflow_per_item_ends_its_parent_step_with_the_outputs(
    shapes_worker: Any,
) -> None:
    run = shapes.PER_CUSTOMER.run({"count": 3})

    assert run.wait(timeout=30) == 30
    children = run.children()
    assert sorted(c.record().parent_step_id or "" for c in children) == [
        "bill[0]",
        "bill[1]",
        "bill[2]",
    ]
    assert all(c.status() == RunStatus.SUCCEEDED for c in children)
    assert {c.record().parent_run_id for c in children} == {run.id}


def test_cancelling_a_parent_cancels_its_child(shapes_worker: Any) -> None:
    run = shapes.SLOW_CHILD.run({"customer": "x", "amount": 1, "seconds": 5.0})
    [child] = eventually(run.children, 20, "the child run")
    eventually(lambda: child.status() == RunStatus.RUNNING, 20, "the child to run")

    run.cancel()

    assert child.status() == RunStatus.CANCELLED
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=10)
    assert run.status() == RunStatus.CANCELLED


def test_a_map_over_a_map_and_an_empty_list(shapes_worker: Any) -> None:
    run = shapes.MAP_OVER_MAP.run({"count": 4})
    assert run.wait(timeout=30) == {"count": 4, "sum": sum(n * n + 1 for n in range(4))}
    steps = {s.step_id: s for s in run.steps()}
    assert steps["plus_one"].result == [1, 2, 5, 10] and steps["plus_one[3]"].result == 10

    empty = shapes.MAP_OVER_MAP.run({"count": 0})
    assert empty.wait(timeout=30) == {"count": 0, "sum": 0}
    assert {s.step_id for s in empty.steps()} == {"list", "square", "plus_one", "tally"}


def test_retry_reruns_only_the_items_that_did_not_succeed(
    shapes_worker: Any, servers: dict[str, str]
) -> None:
    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    client.delete(shapes.FRAGILE_KEY, f"{shapes.FRAGILE_KEY}:calls")
    run = shapes.FRAGILE.run({"count": 6})
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)

    client.set(shapes.FRAGILE_KEY, 1)  # mend item 3
    retried = eventually(lambda: _retry_once_allowed(run), 30, "the retry")

    assert retried.wait(timeout=30) == {"count": 6, "sum": 15}
    calls = {int(k): int(v) for k, v in client.hgetall(f"{shapes.FRAGILE_KEY}:calls").items()}
    # item 3 ran twice (failed, then retried); every other item ran once: those that succeeded
    # in the first run (also those still running when it failed) were not run again, and
    # those the failure stopped before they started ran in the retry
    assert calls == {n: 2 if n == 3 else 1 for n in range(6)}


def test_pausing_a_parent_pauses_its_child(shapes_worker: Any) -> None:
    run = shapes.SLOW_CHILD.run({"customer": "x", "amount": 1, "seconds": 2.0})
    [child] = eventually(run.children, 20, "the child run")

    run.pause()

    assert child.status() == RunStatus.PAUSED
    run.resume()
    assert run.wait(timeout=30) == {"customer": "x", "billed": 10}
    assert child.status() == RunStatus.SUCCEEDED


def test_show_lists_a_fan_out_once_with_its_item_counts(
    shapes_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli import main

    run = shapes.FAN_OUT.run({"count": 20})
    run.wait(timeout=30)

    assert main(["show", run.id]) == 0
    out = capsys.readouterr().out
    assert "(20 for_each items not listed: 20 succeeded; --full lists them)" in out
    assert "square[7]" not in out and "20/20 items" in out
    assert main(["show", run.id, "--full"]) == 0
    assert "square[19]" in capsys.readouterr().out


@pytest.fixture(scope="module")
def lagging_worker(start_worker: Callable[..., Any], servers: dict[str, str]) -> Iterator[Any]:
    """A worker whose history lags: it writes step events every second (a run's end at once), so a
    step that runs when its run ends is not yet ``running`` in history."""
    env = {
        "ORCHESTRATOR_TASK_MODULES": f"{MODULES},tests.integration.lagging",
        "ORCHESTRATOR_HISTORY_FLUSH_INTERVAL": "1",
    }
    worker = start_worker("lagging", env=env, args=("-Q", lagging.LAGGING))
    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    yield client
    worker.stop()


def _late_run(client: redis.Redis, items: list[int]) -> Any:
    """A run of ``shapes.LATE`` over ``items``, once its item 1 runs."""
    client.delete(*(f"{lagging.LATE_KEY}{k}" for k in ("", ":calls", ":running", ":release")))
    run = lagging.LATE.run({"items": items})
    eventually(lambda: client.exists(f"{lagging.LATE_KEY}:running"), 30, "item 1 to run")
    return run


def _retry_once_allowed(run: Any) -> Any:
    """``run.retry()``, or None while it is refused because a step of the run still runs."""
    try:
        return run.retry()
    except InvalidTransition:
        return None


def _calls(client: redis.Redis) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(f"{lagging.LATE_KEY}:calls").items()}


def _item(run: Any, step_id: str) -> tuple[str, Any]:
    step = next(s for s in run.steps() if s.step_id == step_id)
    return step.status, step.result


def test_an_item_that_succeeds_after_its_run_failed_is_kept_and_not_run_again(
    lagging_worker: redis.Redis,
) -> None:
    client = lagging_worker
    # Given a fan-out whose item 0 fails for good while item 1 still runs
    run = _late_run(client, [0, 1])
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)

    # When the run is retried (as soon as it may be) with item 0 mended, and item 1 then ends
    client.set(lagging.LATE_KEY, 1)
    early = _retry_once_allowed(run)  # item 1 still runs: refused
    client.set(f"{lagging.LATE_KEY}:release", 1)
    retried = early or eventually(lambda: _retry_once_allowed(run), 30, "the retry")

    # Then the retry ran item 0 only, history keeps item 1's success, and the run stays failed
    assert retried.wait(timeout=30) == {"count": 2, "sum": 1}
    assert _calls(client) == {0: 2, 1: 1}
    assert eventually(lambda: _item(run, "item[1]") == ("succeeded", 1), 10, "item 1's success")
    assert _item(run, "item[0]")[0] == "failed" and run.status() == RunStatus.FAILED


def test_a_step_that_succeeds_after_its_run_was_cancelled_is_kept(
    lagging_worker: redis.Redis,
) -> None:
    client = lagging_worker
    # Given a fan-out cancelled while its item runs
    run = _late_run(client, [1])
    run.cancel()

    # When the item then succeeds
    client.set(f"{lagging.LATE_KEY}:release", 1)

    # Then history records its success (the run stays cancelled), and a retry inherits it
    assert eventually(lambda: _item(run, "item[0]") == ("succeeded", 1), 10, "item's success")
    assert run.status() == RunStatus.CANCELLED
    retried = eventually(lambda: _retry_once_allowed(run), 30, "the retry")
    assert retried.wait(timeout=30) == {"count": 1, "sum": 1}
    assert _calls(client) == {1: 1}
