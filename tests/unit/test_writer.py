"""The history writer's pure parts: merging events, isolating a refused one, encoding."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator import codec
from orchestrator.records import DeadLetterEvent, RunFinal, SkipSteps, StepEvent
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.postgres.batch import _dead_params, _step_params, merge_steps
from orchestrator.stores.postgres.writer import _reason, _transient, describe, isolate

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_merge_keeps_the_latest_status_and_when_it_started() -> None:
    # Given a step's start and end, and another attempt of it, in one batch
    events = [
        StepEvent("r", "a", 1, StepStatus.RUNNING, T0, worker="w1", starts_run=True),
        StepEvent("r", "a", 1, StepStatus.SUCCEEDED, T0 + timedelta(seconds=2), result=1),
        StepEvent("r", "a", 2, StepStatus.RUNNING, T0 + timedelta(seconds=3)),
    ]
    # When they are merged
    merged = merge_steps(events)
    # Then one event per attempt says how the attempt ended, when it started and where
    assert [(e.attempt, e.status) for e in merged] == [(1, "succeeded"), (2, "running")]
    assert merged[0].started_at == T0
    assert merged[0].worker == "w1"
    assert merged[0].starts_run


def test_isolate_writes_everything_but_the_refused_items_in_order() -> None:
    # Given a batch in which two items are refused
    calls: list[list[int]] = []

    def apply(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items or 40 in items:
            raise ValueError("refused")
        return list(items)

    # When it is applied with isolation
    done, refused = isolate(list(range(64)), apply)
    # Then every other item was applied once, in order, and each refused one stands alone
    assert [x for chunk in done for x in chunk] == [x for x in range(64) if x not in (13, 40)]
    assert [(item, str(exc)) for item, exc in refused] == [(13, "refused"), (40, "refused")]
    # in a few calls, not one per item
    assert len(calls) <= 4 * 6 + 1


def test_isolate_of_a_good_batch_is_one_call() -> None:
    done, refused = isolate([1, 2, 3], lambda items: sum(items))
    assert done == [6]
    assert refused == []


def test_isolate_of_an_empty_or_single_refused_batch() -> None:
    def refuse(items: Sequence[int]) -> None:
        raise RuntimeError("no")

    assert isolate([], lambda items: len(items)) == ([0], [])
    done, refused = isolate([7], refuse)
    assert done == []
    assert [(item, type(exc)) for item, exc in refused] == [(7, RuntimeError)]


def test_step_values_are_encoded_with_celerys_json_and_without_nul() -> None:
    # Given a step that returned typed values and failed with a NUL in its error
    at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    event = StepEvent(
        "r",
        "a",
        1,
        StepStatus.FAILED,
        T0,
        worker="w\x00",
        result={"at": at, "n": Decimal("1.10"), "s": "\u0000"},
        error="bad\x00byte",
        traceback="tb\x00",
    )
    # When its parameters are built
    params = _step_params(event)
    # Then the result is Celery's JSON (typed values come back), NULs replaced everywhere
    assert codec.decode(params["result"]) == {"at": at, "n": Decimal("1.10"), "s": "\ufffd"}
    assert (params["error"], params["traceback"], params["worker"]) == (
        "bad\ufffdbyte",
        "tb\ufffd",
        "w\ufffd",
    )


def test_a_step_result_celery_cannot_encode_is_an_error() -> None:
    with pytest.raises(codec.UnencodableValue):
        _step_params(StepEvent("r", "a", 1, StepStatus.SUCCEEDED, T0, result=object()))


def test_a_dead_letter_is_kept_whatever_its_arguments() -> None:
    # Given a dead letter whose arguments Celery's JSON cannot all encode
    thing = object()
    event = DeadLetterEvent(
        "t", "exhausted", T0, args=[T0, thing], kwargs={"k": {thing}}, error="e\x00"
    )
    # When its parameters are built
    params = _dead_params(event)
    # Then what can be encoded is, the rest is kept as its repr
    assert codec.decode(params["args"]) == [T0, repr(thing)]
    assert json.loads(params["kwargs"]) == {"k": repr({thing})}
    assert params["error"] == "e\ufffd"


def test_connection_trouble_is_retried_and_refusals_are_not() -> None:
    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection"))
    refused = DataError("INSERT", {}, Exception("invalid input syntax for type json"))
    assert _transient(lost)
    assert _transient(PoolTimeout("QueuePool limit reached"))
    assert not _transient(refused)
    assert not _transient(codec.UnencodableValue("Object of type object"))
    assert _reason(refused) == "Exception: invalid input syntax for type json"


def test_describe_names_the_run_step_and_attempt() -> None:
    step = StepEvent("r", "a", 2, StepStatus.SUCCEEDED, T0)
    assert describe(step) == "run r step a attempt 2 (succeeded)"
    skip = SkipSteps("r", ("b", "c"), StepStatus.SKIPPED, T0)
    assert describe(skip) == "run r steps b, c (skipped)"
    assert describe(RunFinal("r", RunStatus.FAILED, T0)) == "run r end (failed)"
    assert describe(DeadLetterEvent("t", "x", T0, "r", "a")) == "dead letter of t (run r, step a)"


def test_a_process_holds_at_most_two_postgresql_connections() -> None:
    # a worker with -c 32 must not open ~200 connections: one engine per process, 1 + 1 overflow
    from orchestrator.stores.postgres.store import HistoryStore

    engine = HistoryStore("postgresql+psycopg://u@127.0.0.1:1/db").engine
    try:
        assert (engine.pool.size(), engine.pool._max_overflow) == (1, 1)  # type: ignore[attr-defined]
    finally:
        engine.dispose()


class Batches:
    """A writer whose transactions are noted, not sent (``_commit`` replaced)."""

    def __init__(self, flush_interval: float, batch_size: int = 1000) -> None:
        from typing import Any, cast

        from orchestrator.stores.postgres.writer import HistoryWriter

        self.written: list[tuple[float, int]] = []  # when, how many events
        self.writer = HistoryWriter(
            cast(Any, None), flush_interval=flush_interval, batch_size=batch_size
        )
        self.writer._commit = self._commit  # type: ignore[method-assign]

    def _commit(self, events: Sequence[object]) -> list[tuple[str, str]]:
        self.written.append((time.monotonic(), len(events)))
        return []


def step_event(n: int) -> StepEvent:
    return StepEvent("r", f"s{n}", 1, StepStatus.RUNNING, T0)


def test_events_wait_out_the_window_and_are_written_in_one_batch() -> None:
    batches = Batches(flush_interval=0.3)
    started = time.monotonic()
    for n in range(50):
        batches.writer.submit(step_event(n))
    time.sleep(0.6)
    assert [count for _, count in batches.written] == [50]
    assert batches.written[0][0] - started >= 0.25
    batches.writer.close()


def test_a_run_end_a_flush_or_a_full_batch_is_written_without_waiting_the_window() -> None:
    # Given a writer with a long window
    batches = Batches(flush_interval=30.0, batch_size=10)
    # When a run ends: its batch is written at once
    batches.writer.submit(step_event(0))
    batches.writer.submit(RunFinal("r", RunStatus.SUCCEEDED, T0, output=1))
    deadline = time.monotonic() + 5
    while not batches.written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [count for _, count in batches.written] == [2]
    # When more than a batch is queued: batch after batch, none waits the window
    started = time.monotonic()
    for n in range(25):
        batches.writer.submit(step_event(n))
    # And a flush asked for is done at once
    assert batches.writer.flush(timeout=5)
    assert time.monotonic() - started < 5
    assert sum(count for _, count in batches.written[1:]) == 25
    batches.writer.close(timeout=5)
