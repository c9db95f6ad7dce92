"""Claims that lapsed before history saw their step start: a worker killed after its claim and
before its history writer flushed leaves the step ``pending`` in history; the reconciler finds
the claim in run state and recovers the run once its lease has been missing a lease period."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest

from orchestrator import Workflow
from orchestrator.codec import encode
from orchestrator.engine.children import waiting_owner
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.sleeping import parked_owner
from orchestrator.ops import reconciler as reconciler_module
from orchestrator.ops.reconciler import Reconciler
from orchestrator.ports import RunStateStore
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.memory.runs import MemoryRunState
from tests.unit.engine.harness import Engine, ManualClock, calls
from tests.unit.engine.steps import CHAIN, inc, source

DEAD = "gone@host:1:x-dead"  # a lease holder whose process was killed
LEASE_MS = 30_000  # the default lease (30 s), as the reconciler's settings have it

NAP = Workflow("lapsed_nap").step("a", source).sleep("nap", 3600, after="a")
KID = Workflow("lapsed_kid").step("w", inc)
PARENT = Workflow("lapsed_parent").step("kid", workflow=KID)


def _later(engine: Engine, seconds: float) -> None:
    """Time passes for run state (leases), the reconciler, and history."""
    engine.state_clock.advance(seconds)
    engine.history_ahead += timedelta(seconds=seconds)


def _recovered(reconciler: Reconciler) -> int:
    return reconciler.pass_once()["recovered"]


def _recovered_a_lease_period_later(engine: Engine, reconciler: Reconciler) -> None:
    """The pass that first sees a lease missing recovers nothing, nor does one 29 s later; the
    first pass a whole lease period (30 s) after it recovers the run."""
    assert _recovered(reconciler) == 0
    _later(engine, 29)
    assert _recovered(reconciler) == 0
    _later(engine, 2)
    assert _recovered(reconciler) == 1


def _ends(engine: Engine, run: RunHandle, called: list[tuple[str, int]]) -> None:
    """The run, recovered, ends with its output, its steps called as ``called``."""
    engine.finish(run)
    assert run.wait() == 3
    assert calls(run) == called


def _claimed_by(engine: Engine, owner: str) -> RunHandle:
    """A chain whose step ``b`` was claimed by ``owner``, whose history never saw it start."""
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    engine.take()  # b's message: unacknowledged with the worker that claimed it
    assert engine.state.claim(run.id, "b", 1, owner, LEASE_MS, ["a"]).outcome == "go"
    assert engine.steps(run)["b"].status == StepStatus.PENDING
    return run


def test_a_claim_history_never_saw_is_recovered_after_a_lease_period_missing(
    engine: Engine,
) -> None:
    # Given step b claimed by a worker killed before its history writer flushed
    run = _claimed_by(engine, DEAD)
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    assert _recovered(reconciler) == 0
    # When its lease has lapsed, it is a suspect, not yet lost
    _later(engine, 31)
    assert engine.state.lapsed_claims([run.id]) == [(run.id, "b", 1)]
    # Then once it has been missing a whole lease period, its run is recovered, and ends
    _recovered_a_lease_period_later(engine, reconciler)
    _ends(engine, run, [("a", 1), ("b", 1), ("c", 1)])
    assert [kind for _, kind, _ in run.events()] == ["recovered"]


def test_a_lease_its_live_process_renews_after_a_redis_restart_is_not_taken_for_dead(
    engine: Engine,
) -> None:
    # Given step b running in a live process, its start not yet in history, and its lease lost
    # (Redis away for longer than a lease: the process re-creates it once Redis is back)
    run = _claimed_by(engine, "live@host:2:x-live")
    lease = {(run.id, "b", 1): "live@host:2:x-live"}
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    _later(engine, 31)
    assert _recovered(reconciler) == 0  # seen missing
    # When the process renews it within a third of a lease, and keeps renewing it
    _later(engine, 10)
    assert engine.state.renew(lease, LEASE_MS) == 1
    for _ in range(6):
        assert _recovered(reconciler) == 0
        _later(engine, 10)
        engine.state.renew(lease, LEASE_MS)
    # Then the run is never recovered, however long the step runs
    assert _recovered(reconciler) == 0
    assert calls(run) == [("a", 1)]
    # and if the process dies after all, its lease must be missing a whole period again
    _later(engine, 31)
    _recovered_a_lease_period_later(engine, reconciler)


def test_an_attempt_a_later_one_superseded_is_not_a_suspect(engine: Engine) -> None:
    # Given attempt 1 of b claimed, failed, and its attempt 2 noted (not delivered yet)
    run = _claimed_by(engine, DEAD)
    engine.state.release(run.id, "b", 1, DEAD)
    engine.state.expect_retry(run.id, "b", 2, {}, 0.0)
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    # Then attempt 1, claimed and without a result, is no suspect: its retry is on its way
    _later(engine, 31)
    assert engine.state.lapsed_claims([run.id]) == []
    assert _recovered(reconciler) == 0
    _later(engine, 31)
    assert _recovered(reconciler) == 0
    # When attempt 2 is claimed by a worker that is then killed, attempt 2 is the suspect
    assert engine.state.claim(run.id, "b", 2, DEAD, LEASE_MS, ["a"]).outcome == "go"
    _later(engine, 31)
    assert engine.state.lapsed_claims([run.id]) == [(run.id, "b", 2)]
    _recovered_a_lease_period_later(engine, reconciler)
    # and the recovery runs attempt 2 (a copy of attempt 1 would be stale)
    _ends(engine, run, [("a", 1), ("b", 2), ("c", 1)])


def test_a_parked_step_and_a_step_waiting_for_its_child_are_not_suspects(
    engine: Engine,
) -> None:
    # Given a run whose step sleeps for an hour (parked), and one whose step waits for its
    # child run (the child's step not delivered)
    napping = engine.start(NAP, {"start": 1})
    engine.take()["a"].execute()
    engine.take()["nap"].execute()
    _ = KID.spec  # registered
    parent = engine.start(PARENT, {"value": 1})
    engine.take()["kid"].execute()
    engine.take()  # the child's first message
    [child] = parent.children()
    assert engine.steps(napping)["nap"].status == StepStatus.RUNNING
    assert engine.steps(parent)["kid"].status == StepStatus.RUNNING
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    # Then over two lease periods neither is a suspect, nor recovered
    for _ in range(7):
        assert engine.state.lapsed_claims([napping.id, parent.id, child.id]) == []
        assert _recovered(reconciler) == 0
        _later(engine, 10)
    for run in (napping, parent, child):
        assert "recovered" not in [kind for _, kind, _ in run.events()]


def check_lapsed_claim_rules(
    state: RunStateStore, wait: Callable[[float], None], lease_ms: int
) -> None:
    """What ``lapsed_claims`` reports, on either store: claimed attempts with no result, no live
    lease and no later attempt (``wait(s)`` lets ``s`` seconds pass for the leases)."""
    run, w = f"rules-{uuid.uuid4().hex}", "w@host:1:x-1"

    def lapsed() -> list[tuple[str, str, int]]:
        return sorted(state.lapsed_claims([run, f"none-{uuid.uuid4().hex}"]))

    def claim(step: str, attempt: int = 1) -> None:
        assert state.claim(run, step, attempt, w, lease_ms, []).outcome == "go"

    claim("a")
    assert lapsed() == []  # its lease is alive
    wait(lease_ms / 1000 * 1.5)
    assert lapsed() == [(run, "a", 1)]
    state.renew({(run, "a", 1): w}, lease_ms)  # its live process re-creates it
    assert lapsed() == []
    state.finish_step(run, "a", encode(1), [], False, 1, w)
    claim("b")  # attempt 1 failed, attempt 2 noted: superseded
    state.release(run, "b", 1, w)
    state.expect_retry(run, "b", 2, {}, 0.0)
    claim("c")  # parked: not counted, held in its parked owner's name
    state.release(run, "c", 1, w)
    state.undo_delivery(run, "c", 1)
    state.renew({(run, "c", 1): parked_owner("c")}, lease_ms * 100)
    claim("d")  # waits for its child run, held in the child's name
    state.release(run, "d", 1, w)
    state.renew({(run, "d", 1): waiting_owner("child-run")}, lease_ms * 100)
    claim("e")  # deferred by a breaker: given back
    state.release(run, "e", 1, w)
    state.undo_delivery(run, "e", 1)
    assert lapsed() == []
    claim("f[3]")  # an item, and attempt 2 of b: their process died
    claim("b", 2)
    state.release(run, "f[3]", 1, w)
    wait(lease_ms / 1000 * 1.5)
    assert lapsed() == [(run, "b", 2), (run, "f[3]", 1)]
    state.end(run, RunStatus.FAILED)  # an ended run's claims are gone
    assert lapsed() == []


def test_the_memory_twin_keeps_the_lapsed_claim_rules() -> None:
    clock = ManualClock()
    check_lapsed_claim_rules(MemoryRunState(clock), clock.advance, LEASE_MS)


def test_a_step_that_ended_in_redis_but_not_in_history_moves_its_run_on(engine: Engine) -> None:
    # Given a chain whose step b succeeded in run state, in a process killed before its history
    # writer flushed and before its canvas moved on (c was never published)
    run = engine.start(CHAIN, {"start": 1})
    engine.take()["a"].execute()
    b = engine.take()["b"]
    submit = engine.rt.writer.submit
    engine.rt.writer.submit = lambda event: None  # type: ignore[method-assign]
    b.execute()
    engine.rt.writer.submit = submit  # type: ignore[method-assign]
    engine.worker.purge()  # c's message, lost with the killed worker
    assert engine.steps(run)["b"].status == StepStatus.PENDING
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    assert _recovered(reconciler) == 0
    # When the run has been quiet for a lease period, b is a suspect; a lease period later the
    # run is recovered: b is recorded from run state (not run again) and c runs
    _later(engine, 31)
    _recovered_a_lease_period_later(engine, reconciler)
    _ends(engine, run, [("a", 1), ("b", 1), ("c", 1)])
    assert engine.steps(run)["b"].status == StepStatus.SUCCEEDED


def test_a_lapsed_claim_is_found_among_more_quiet_runs_than_a_pass_asks_about(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given more quiet runs than a pass asks Redis about (here 1 of 3): two wait in a backlog
    # (b's message queued, not claimed), and the last one's b was claimed by a killed worker
    monkeypatch.setattr(reconciler_module, "CLAIM_CANDIDATES", 1)
    waiting, queued = [], []
    for _ in range(2):
        waiting.append(engine.start(CHAIN, {"start": 1}))
        engine.take()["a"].execute()
        queued.append(engine.take()["b"])  # still in its queue
    lost = _claimed_by(engine, DEAD)
    reconciler = Reconciler(engine.rt, clock=engine.state_clock)
    _later(engine, 31)
    # When passes go by: the runs asked about are drawn at random, and a run with a suspect
    # stays asked about until its lease has been missing a lease period
    recovered = 0
    for _ in range(120):
        recovered += _recovered(reconciler)
        if recovered:
            break
        _later(engine, 1)
    # Then the lost run is recovered (not stuck behind the backlog for the stall timeout)
    assert recovered == 1
    assert [kind for _, kind, _ in lost.events()] == ["recovered"]
    assert all(run.events() == [] for run in waiting)
    for request in queued:
        request.execute()
    _ends(engine, lost, [("a", 1), ("b", 1), ("c", 1)])
