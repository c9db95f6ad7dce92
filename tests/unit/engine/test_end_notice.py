"""``wait()`` returns on the worker's announcement of a run's end, with its output, before
history's transaction; the handle's reads then wait until history has the end too."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.client import get_run, list_runs
from orchestrator.codec import encode
from orchestrator.engine import finish
from orchestrator.records import EndNotice, RunFinal
from orchestrator.status import RunStatus
from orchestrator.stores.redis.runs import end_notice
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import CHAIN


def notices_of(engine: Engine, run_id: str) -> tuple[list[EndNotice], threading.Event]:
    """The run's end announcements, gathered by a thread subscribed from now on."""
    seen: list[EndNotice] = []
    subscribed = threading.Event()

    def gather() -> None:
        for notice in engine.rt.state.watch_done(run_id, 10.0, tick=0.05):
            subscribed.set()
            if notice is not None:
                seen.append(notice)
            if any(n.output is not None for n in seen) and len(seen) >= 2:
                return

    threading.Thread(target=gather, daemon=True).start()
    assert subscribed.wait(5)
    return seen, subscribed


def test_the_worker_that_ends_a_run_announces_it_with_its_output(engine: Engine) -> None:
    # Given a chain run, watched
    run = engine.start(CHAIN, {"start": 1})
    seen, _ = notices_of(engine, run.id)
    # When its steps run to its end
    engine.finish(run)
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Then its end is announced by history (status) and by the worker, with the output
    assert EndNotice(RunStatus.SUCCEEDED, encode(3)) in seen
    assert EndNotice(RunStatus.SUCCEEDED) in seen


def test_an_output_over_the_limit_is_not_announced_but_read_from_history(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(finish, "NOTICE_LIMIT", 0)
    run = engine.start(CHAIN, {"start": 1})
    seen, _ = notices_of(engine, run.id)
    engine.finish(run)
    time.sleep(0.2)
    assert seen == [EndNotice(RunStatus.SUCCEEDED)]
    assert run.wait(timeout=5) == 3


def test_a_paused_run_is_not_announced_before_history_decides(engine: Engine) -> None:
    # Given a run whose last step runs while the run is being paused (the flag is set)
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()["b"].execute()
    last = engine.take()["c"]
    seen, _ = notices_of(engine, run.id)
    real_outcomes = engine.rt.state.outcomes

    def paused_meanwhile(*args: object, **kwargs: object) -> object:
        engine.rt.state.pause(run.id)
        return real_outcomes(*args, **kwargs)  # type: ignore[arg-type]

    engine.rt.state.outcomes = paused_meanwhile  # type: ignore[method-assign]
    last.execute()
    time.sleep(0.2)
    # Then no announcement carries an output: waiters read history's verdict
    assert all(n.output is None for n in seen)


def test_wait_returns_the_announced_output_and_reads_wait_for_history(engine: Engine) -> None:
    # Given a run that ran to its end in Redis; history has not written its end yet
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()["b"].execute()
    held: list[RunFinal] = []
    submit = engine.rt.writer.submit

    def hold_the_end(event: object) -> None:
        if isinstance(event, RunFinal):
            held.append(event)
        else:
            submit(event)  # type: ignore[arg-type]

    engine.rt.writer.submit = hold_the_end  # type: ignore[method-assign]
    outputs: list[object] = []
    waiter = threading.Thread(target=lambda: outputs.append(run.wait(timeout=10)))
    waiter.start()
    time.sleep(0.2)  # the waiter is subscribed

    # When the last step ends: the waiter gets the output the worker announced at once
    engine.take()["c"].execute()
    waiter.join(2.0)
    assert outputs == [3]
    assert len(held) == 1 and engine.history.get_run(run.id).status == RunStatus.RUNNING
    # And when the run is read while history writes the end, the read waits for it: through
    # its handle, a new handle, or the list of runs
    threading.Timer(0.3, submit, args=(held[0],)).start()
    listed = list_runs(CHAIN.spec.name, RunStatus.SUCCEEDED, app=engine.app)
    assert [r.id for r in listed] == [run.id]
    assert get_run(run.id, app=engine.app).status() == RunStatus.SUCCEEDED
    assert [s.status for s in run.steps()] == [RunStatus.SUCCEEDED] * 3
    assert not engine.rt.ends_ahead._runs  # forgotten once history had it


def test_announcements_of_older_workers_are_read_as_a_status() -> None:
    assert end_notice("failed") == EndNotice("failed")
    payload = encode({"status": "succeeded", "output": encode({"x": 1})})
    assert end_notice(payload) == EndNotice("succeeded", encode({"x": 1}))


def test_runs_noted_are_forgotten_once_their_wait_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.engine import ends_ahead

    now = [100.0]
    monkeypatch.setattr(ends_ahead.time, "monotonic", lambda: now[0])
    noted = ends_ahead.EndsAhead(lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    noted.note("a")
    now[0] += ends_ahead.SETTLE_WAIT + 1
    noted.note("b")
    assert list(noted._runs) == ["b"]  # a's wait was over: nothing to settle for it
    now[0] += ends_ahead.SETTLE_WAIT + 1
    noted.settle()  # b's wait is over too: forgotten without asking a store
    assert not noted._runs


def test_a_run_announced_whose_worker_died_before_history_had_its_end_still_ends(
    engine: Engine,
) -> None:
    # Given a chain whose last step's worker announced the run's end and was killed before its
    # history writer wrote anything of that step (its success, the run's end)
    from datetime import timedelta

    from orchestrator.ops.reconciler import Reconciler

    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()["b"].execute()
    outputs: list[object] = []
    waiter = threading.Thread(target=lambda: outputs.append(run.wait(timeout=10)))
    waiter.start()
    time.sleep(0.2)
    submit = engine.rt.writer.submit
    engine.rt.writer.submit = lambda event: None  # type: ignore[method-assign]
    engine.take()["c"].execute()
    engine.rt.writer.submit = submit  # type: ignore[method-assign]
    waiter.join(2.0)
    assert outputs == [3]
    assert engine.history.get_run(run.id).status == RunStatus.RUNNING

    # When the reconciler passes with the default lease (30 s) as time goes by
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    for _ in range(20):
        reconciler.pass_once()
        if engine.history.get_run(run.id).status.terminal:
            break
        engine.state_clock.advance(5)
        engine.history_ahead += timedelta(seconds=5)
    # Then the run ends in history as it was announced, its last step not run again
    record = engine.history.get_run(run.id)
    assert record.status == RunStatus.SUCCEEDED and record.output == 3
    assert [s.status for s in run.steps()] == [RunStatus.SUCCEEDED] * 3
    assert calls(run) == [("a", 1), ("b", 1), ("c", 1)]
