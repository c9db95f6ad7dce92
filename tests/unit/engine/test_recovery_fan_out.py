"""Recovering a run whose ``for_each`` fan-out lost items with a worker (``ops.recovery``).

A fanned-out step holds no lease while its items run, and re-publishing the step does not
re-publish its items: the items that neither ended nor run elsewhere are published again. The
reconciler takes the fanned-out step for a lost one only once its fan-out is idle.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import Workflow, current_run, retry, task
from orchestrator.engine import finish
from orchestrator.ops.recovery import fan_out_busy, recover_run
from orchestrator.records import StepEvent
from orchestrator.status import RunStatus, StepStatus
from tests.unit.engine.harness import Engine

DONE: Counter[str] = Counter()


@task
def numbers(count: int) -> list[int]:
    return list(range(count))


@task
def double(n: int) -> int:
    DONE[current_run.step_id] += 1
    return n * 2


@task
@retry(max_attempts=3, base_delay=5.0, jitter=False)
def double_once_refused(n: int) -> int:
    if n == 1 and current_run.attempt == 1:
        raise ConnectionError("item 1 refused at its first attempt")
    DONE[f"{current_run.step_id}:{current_run.attempt}"] += 1
    return n * 2


FAN_OUT = Workflow("recovery_fan_out").step("list", numbers).step("work", double, for_each="list")
RETRIED_FAN_OUT = (
    Workflow("recovery_retried_fan_out")
    .step("list", numbers)
    .step("work", double_once_refused, for_each="list")
)


def _item(request: Any) -> int | None:
    return request.kwargs["orchestrator"].get("item")


def test_items_lost_with_a_worker_are_published_again_and_run_once(engine: Engine) -> None:
    DONE.clear()
    # Given a fan-out of 3 items whose item 0 ended, item 1 died running (its worker was
    # killed) and item 2's message was lost with that worker before it started
    run = engine.start(FAN_OUT, {"count": 3})
    engine.take()["list"].execute()
    engine.take()["work"].execute()
    items = {_item(r): r for r in engine.worker.take() if _item(r) is not None}
    assert sorted(items) == [0, 1, 2]
    items[0].execute()
    engine.state.claim(run.id, "work[1]", 1, "gone@host:1:x", 30_000, ["work[1].in"])
    engine.rt.writer.submit(
        StepEvent(run.id, "work[1]", 1, StepStatus.RUNNING, datetime.now(UTC), worker="gone")
    )
    engine.rt.writer.flush(timeout=5)
    # While item 1's lease is alive, nothing is recovered
    assert recover_run(engine.rt, run.id, "a step's worker died") is None
    # When it has lapsed, the run is recovered: items 1 and 2 are published again
    engine.state_clock.advance(31)
    assert recover_run(engine.rt, run.id, "a step's worker died") == 1
    engine.finish(run)
    # Then the run succeeds with every item's result in order, each item called once
    assert run.status() == RunStatus.SUCCEEDED
    assert run.wait() == [0, 2, 4]
    assert DONE == {"work[0]": 1, "work[1]": 1, "work[2]": 1}


def test_a_fan_out_is_busy_while_its_items_move_or_are_queued(engine: Engine) -> None:
    run = engine.start(FAN_OUT, {"count": 2})
    engine.take()["list"].execute()
    engine.take()["work"].execute()
    engine.rt.writer.flush(timeout=5)
    # no item started or ended yet: idle, unless its queue holds messages (a backlog)
    assert not fan_out_busy(engine.rt, run.id, "work", lambda run_id: False)
    assert fan_out_busy(engine.rt, run.id, "work", lambda run_id: True)
    # an item started within a lease period: the fan-out goes on
    engine.rt.writer.submit(StepEvent(run.id, "work[0]", 1, StepStatus.RUNNING, datetime.now(UTC)))
    engine.rt.writer.flush(timeout=5)
    assert fan_out_busy(engine.rt, run.id, "work", lambda run_id: False)
    # a step that did not fan out is never a busy fan-out
    assert not fan_out_busy(engine.rt, run.id, "list", lambda run_id: True)
    engine.worker.purge()


def _lose_item_1_success(engine: Engine) -> Callable[[Any], None]:
    """Item 1's success never reaches history (its process was killed before its writer
    flushed, and no copy of its message comes back to record it); the writer's submit."""
    submit = engine.rt.writer.submit

    def killed_before_flush(event: Any) -> None:
        lost = isinstance(event, StepEvent) and event.step_id == "work[1]"
        if not (lost and event.status == StepStatus.SUCCEEDED):
            submit(event)

    engine.rt.writer.submit = killed_before_flush  # type: ignore[method-assign]
    return submit


def test_a_run_end_writes_the_steps_other_writers_have_not_written(engine: Engine) -> None:
    # Given a fan-out whose item 1's success is not in history when the run's last step ends
    _lose_item_1_success(engine)
    run = engine.start(FAN_OUT, {"count": 3})
    engine.worker.run(lambda: run.record().finished_at is not None, timeout=10)
    # Then the run's end wrote it from Redis, and the run succeeded with it at once
    history = engine.rt.history
    assert history.get_run(run.id).status == RunStatus.SUCCEEDED  # type: ignore[union-attr]
    item = engine.steps(run)["work[1]"]
    assert (item.status, item.result, item.attempts) == (StepStatus.SUCCEEDED, 2, 1)
    # with when it started and finished (Redis noted both), not when the run ended
    ended = run.record().finished_at
    assert item.started_at is not None and item.finished_at is not None and ended is not None
    assert item.started_at <= item.finished_at <= ended
    assert run.wait() == [0, 2, 4]


def test_an_item_whose_history_died_with_its_worker_is_recorded_from_redis(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.ops.reconciler import Reconciler

    # Given a fan-out whose item 1 succeeded (its result reached Redis) in a process killed
    # before its history writer flushed, in a run too big for its end to write its steps
    monkeypatch.setattr(finish, "SETTLED_LIMIT", 0)
    submit = _lose_item_1_success(engine)
    run = engine.start(FAN_OUT, {"count": 3})
    engine.worker.run(lambda: run.record().finished_at is not None, timeout=10)
    engine.rt.writer.submit = submit  # type: ignore[method-assign]
    engine.rt.writer.flush(timeout=5)
    # the run's output is written, but it cannot succeed: history says item 1 never ended
    assert run.status() == RunStatus.RUNNING
    # When a reconciler pass sees it a reconcile interval later
    engine.history_ahead = timedelta(seconds=engine.rt.settings.reconcile_interval + 1)
    assert Reconciler(engine.rt).pass_once()["recorded"] == 1
    # Then the item is recorded from Redis and the run succeeds with every result
    engine.rt.writer.flush(timeout=5)
    assert engine.steps(run)["work[1]"].status == StepStatus.SUCCEEDED
    assert run.status() == RunStatus.SUCCEEDED
    assert run.wait() == [0, 2, 4]


def test_an_item_retry_is_noted_under_the_item_not_its_for_each_step(engine: Engine) -> None:
    # Given a fan-out whose item 1 fails its first attempt
    run = engine.start(RETRIED_FAN_OUT, {"count": 2})
    engine.take()["list"].execute()
    engine.take()["work"].execute()
    items = {_item(r): r for r in engine.worker.take() if _item(r) is not None}
    items[0].execute()
    items[1].execute()
    # Then its next attempt is noted as the item's (the reconciler finds it there), and the
    # for_each step's own attempt is untouched (a copy of its message is not stale)
    assert engine.state.expected_retry(run.id, "work[1]", 2) is not None
    assert engine.state.current_attempts(run.id) == {"work[1]": 2}
    engine.finish(run)
    assert run.wait() == [0, 2]


def test_an_item_whose_retry_died_with_its_worker_is_published_at_its_current_attempt(
    engine: Engine,
) -> None:
    DONE.clear()
    # Given a fan-out whose item 1 failed its first attempt; its second attempt's message was
    # claimed by a worker that was killed before recording it (history still says retrying
    # after attempt 1; Redis knows attempt 2 is the current one)
    run = engine.start(RETRIED_FAN_OUT, {"count": 3})
    engine.take()["list"].execute()
    engine.take()["work"].execute()
    items = {_item(r): r for r in engine.worker.take() if _item(r) is not None}
    for index in (0, 1, 2):
        items[index].execute()
    engine.worker.purge()  # attempt 2's message, lost with the killed worker
    engine.state.claim(run.id, "work[1]", 2, "gone@host:1:x", 30_000, ["work[1].in"])
    engine.rt.writer.flush(timeout=5)
    assert engine.steps(run)["work[1]"].status == StepStatus.RETRYING
    # When its lease lapsed and the run is recovered
    engine.state_clock.advance(31)
    assert recover_run(engine.rt, run.id, "attempt 2 of step 'work[1]' was lost") == 1
    engine.finish(run)
    # Then item 1 ran its second attempt once (a copy at attempt 1 would be stale, ignored
    # forever) and the run succeeded
    assert run.wait() == [0, 2, 4]
    assert DONE == {"work[0]:1": 1, "work[1]:2": 1, "work[2]:1": 1}
