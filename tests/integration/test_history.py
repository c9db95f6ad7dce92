"""History writes are batched off the hot path, and a normal worker shutdown loses none."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from orchestrator import Workflow
from orchestrator.records import Event, NewRun, NewStep, RunFinal, StepEvent
from orchestrator.settings import get_settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.postgres.store import HistoryStore
from orchestrator.stores.postgres.writer import HistoryWriter
from tests.integration import workload

pytestmark = pytest.mark.integration


def test_warm_shutdown_writes_every_buffered_event(
    start_worker: Callable[..., Any], worker: Any
) -> None:
    # Given a worker on its own queue whose history writer holds events for 60 seconds
    # (a run's end is written at once, so the sink runs on the shared worker)
    held = start_worker(
        "held", args=("-Q", "held"), env={"ORCHESTRATOR_HISTORY_FLUSH_INTERVAL": "60"}
    )
    wf = Workflow("held-history")
    wf.step("a", workload.add, queue="held")
    wf.step("b", workload.double, after="a", queue="held")
    wf.step("c", workload.triple, after="a", queue="held")
    wf.step("d", workload.total, after=["b", "c"])
    runs = [wf.run({"x": i, "y": 1}) for i in range(5)]
    # When every step has finished, the runs succeeded at once (the sink's end wrote the held
    # steps' rows from Redis), while the held worker's own events are still buffered
    for i, run in enumerate(runs):
        assert run.wait(timeout=30) == {"sum": (i + 1) * 5, "parents": ["b", "c"]}
        assert [s.status for s in run.steps()] == ["succeeded"] * 4
        assert [len(s.attempt_log) for s in run.steps()] == [0, 0, 0, 1]
    # and the worker is shut down normally (SIGTERM: warm shutdown)
    assert held.stop() == 0
    # Then every run, step and attempt is in PostgreSQL
    for i, run in enumerate(runs):
        assert run.status() == "succeeded"
        assert run.output == {"sum": (i + 1) * 5, "parents": ["b", "c"]}
        steps = run.steps()
        assert [s.status for s in steps] == ["succeeded"] * 4
        assert all(len(s.attempt_log) == 1 and s.attempt_log[0].worker for s in steps)
        assert all(s.started_at <= s.finished_at for s in steps)


def test_wait_wakes_on_completion_without_polling_the_database(worker: Any) -> None:
    # Given a run that takes about a second
    wf = Workflow("wakeup")
    wf.step("a", workload.sleepy, kwargs={"seconds": 1.0})
    run = wf.run()
    reads = 0
    original = run.record

    def counting() -> Any:
        nonlocal reads
        reads += 1
        return original()

    run.record = counting  # type: ignore[method-assign]
    started = time.monotonic()
    # When the caller waits
    assert run.wait(timeout=30) == "a"
    # Then it returned soon after the end, having read the run row only a few times
    assert time.monotonic() - started < 3.0
    assert reads <= 3


# -- the writer itself, against PostgreSQL (no worker) ------------------------------------------


class GatedStore(HistoryStore):
    """A store whose writes wait until ``gate`` is set (PostgreSQL paused)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.gate = threading.Event()

    @property
    def engine(self) -> Engine:
        self.gate.wait()
        return super().engine


@pytest.fixture
def store(servers: dict[str, str]) -> Iterator[HistoryStore]:
    found = HistoryStore(get_settings().sqlalchemy_url)
    yield found
    found.dispose()


def _new_run(store: HistoryStore, steps: tuple[str, ...] = ("a",)) -> str:
    run_id = str(uuid.uuid4())
    run = NewRun(run_id, "writer-test", uuid.uuid4().hex, {}, {}, "api")
    store.create_run(run, [NewStep(s, "tests.step", uuid.uuid4().hex) for s in steps])
    return run_id


def _step(run_id: str, step: str, status: str, **fields: Any) -> StepEvent:
    return StepEvent(run_id, step, 1, StepStatus(status), datetime.now(UTC), **fields)


def _succeeded_run(run_id: str, output: Any = 1) -> list[Event]:
    """A one-step run from start to end (the run's end last: it ends the batch)."""
    return [
        _step(run_id, "a", "running", worker="w", starts_run=True),
        _step(run_id, "a", "succeeded", result=output),
        RunFinal(run_id, RunStatus.SUCCEEDED, datetime.now(UTC), output=output),
    ]


def _writer(store: HistoryStore, **options: Any) -> HistoryWriter:
    return HistoryWriter(store, **{"flush_interval": 0.3, **options})


def test_typed_results_are_written_and_read_back_typed(store: HistoryStore) -> None:
    # Given a step that returns what Celery's JSON carries and the standard library's refuses
    value = {
        "at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        "amount": Decimal("10.10"),
        "id": uuid.uuid4(),
        "items": [Decimal("0.1"), datetime(2020, 1, 1, tzinfo=UTC)],
    }
    run_id = _new_run(store)
    writer = _writer(store)
    # When its events are written
    for event in _succeeded_run(run_id, value):
        writer.submit(event)
    assert writer.flush(10)
    # Then the step's result and the run's output come back as the same typed values
    record = store.get_run(run_id)
    assert record is not None and record.status is RunStatus.SUCCEEDED
    assert record.output == value
    assert isinstance(record.output["amount"], Decimal)
    [step] = store.get_steps(run_id)
    assert step.status is StepStatus.SUCCEEDED
    assert step.result == value
    assert isinstance(step.result["at"], datetime) and isinstance(step.result["id"], uuid.UUID)
    writer.close()


def test_nul_characters_are_replaced_and_cost_no_other_event(store: HistoryStore) -> None:
    # Given, in one batch, a result with "\u0000", an error and a traceback with "\x00",
    # and the whole life of an unrelated run
    nul_run, other = _new_run(store, ("a", "b")), _new_run(store)
    writer = _writer(store)
    events: list[Event] = [
        _step(nul_run, "a", "running", worker="w\x00", starts_run=True),
        _step(nul_run, "a", "succeeded", result={"text": "a\u0000b"}),
        _step(nul_run, "b", "running", worker="w"),
        _step(nul_run, "b", "failed", error="bad\x00byte", traceback="line\x00"),
        *_succeeded_run(other, {"ok": True}),
    ]
    # When they are written
    for event in events:
        writer.submit(event)
    assert writer.flush(10)
    # Then the unrelated run is complete
    record = store.get_run(other)
    assert record is not None and record.status == "succeeded" and record.output == {"ok": True}
    assert [s.status for s in store.get_steps(other)] == ["succeeded"]
    # and the NUL characters were written as U+FFFD
    a, b = store.get_steps(nul_run)
    assert (a.status, a.result) == ("succeeded", {"text": "a\ufffdb"})
    assert a.attempt_log[0].worker == "w\ufffd"
    assert (b.status, b.error) == ("failed", "bad\ufffdbyte")
    assert b.attempt_log[0].traceback == "line\ufffd"
    writer.close()


def test_a_poisoned_event_is_isolated_and_the_writer_goes_on(
    store: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a batch with a result Celery's JSON cannot encode, one PostgreSQL refuses (NaN is
    # not JSON), and an unrelated run
    poisoned, other, later = _new_run(store, ("a", "b")), _new_run(store), _new_run(store)
    writer = _writer(store)
    events: list[Event] = [
        _step(poisoned, "a", "running", starts_run=True),
        _step(poisoned, "a", "succeeded", result=object()),
        _step(poisoned, "b", "succeeded", result=float("nan")),
        *_succeeded_run(other),
    ]
    # When they are written
    for event in events:
        writer.submit(event)
    assert writer.flush(10)
    # Then every other event is written
    assert store.get_run(other).status == "succeeded"  # type: ignore[union-attr]
    a, b = store.get_steps(poisoned)
    assert (a.status, a.started_at is not None, b.status) == ("running", True, "pending")
    # and each bad event is named in the log and on its run
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(f"run {poisoned} step a attempt 1 (succeeded)" in m for m in logged)
    assert any(f"run {poisoned} step b attempt 1 (succeeded)" in m for m in logged)
    errors = [d for _, kind, d in store.events(poisoned) if kind == "history_error"]
    assert len(errors) == 2
    assert "UnencodableValue" in errors[0] and "step a" in errors[0]
    assert "step b" in errors[1]
    # and the thread lives on: later events are written
    for event in _succeeded_run(later):
        writer.submit(event)
    assert writer.flush(10)
    assert store.get_run(later).status == "succeeded"  # type: ignore[union-attr]
    writer.close()


def _submit_all(writer: HistoryWriter, events: list[Event], count: list[int]) -> threading.Thread:
    def run() -> None:
        for event in events:
            writer.submit(event)
            count[0] += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_full_queue_blocks_submit_and_drops_nothing(store: HistoryStore) -> None:
    # Given a writer that holds 2 events in its queue and whose PostgreSQL is paused
    paused = GatedStore(store.url)
    writer = _writer(paused, batch_size=2, queue_size=2, flush_interval=0.01)
    runs = [_new_run(store) for _ in range(5)]
    events = [e for run_id in runs for e in _succeeded_run(run_id)[:2]]
    # When a step's process submits 10 events
    submitted = [0]
    submitter = _submit_all(writer, events, submitted)
    time.sleep(0.5)
    # Then it is blocked once the batch being written (2) and the queue (2) are full
    assert submitter.is_alive()
    assert submitted[0] == 4
    assert not writer.flush(0.1)
    # and when PostgreSQL is back, every event is written
    paused.gate.set()
    submitter.join(10)
    assert submitted[0] == 10
    assert writer.flush(10)
    for run_id in runs:
        assert [s.status for s in store.get_steps(run_id)] == ["succeeded"]
    writer.close()
    paused.dispose()


def test_close_returns_when_the_queue_is_full(store: HistoryStore) -> None:
    # Given a writer whose queue is full while PostgreSQL is paused
    paused = GatedStore(store.url)
    writer = _writer(paused, batch_size=2, queue_size=2, flush_interval=0.01)
    runs = [_new_run(store) for _ in range(3)]
    events = [e for run_id in runs for e in _succeeded_run(run_id)[:2]]
    submitted = [0]
    submitter = _submit_all(writer, events, submitted)
    time.sleep(0.3)
    assert submitter.is_alive()
    # When the worker shuts down
    started = time.monotonic()
    writer.close(timeout=0.5)
    # Then close gives up after its timeout instead of waiting for room in the queue
    assert time.monotonic() - started < 2.0
    # and nothing is lost: once PostgreSQL is back, the thread writes everything
    paused.gate.set()
    submitter.join(10)
    assert writer.flush(10)
    for run_id in runs:
        assert [s.status for s in store.get_steps(run_id)] == ["succeeded"]
    writer.close(timeout=5)
    assert writer._thread is None
    paused.dispose()
