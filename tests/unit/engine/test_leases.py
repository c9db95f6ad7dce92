"""Leases: a delivery's hold on a step's attempt, kept alive while the step runs."""

from __future__ import annotations

import time

from orchestrator.engine.leases import LeaseKeeper
from orchestrator.stores.memory.runs import MemoryRunState
from tests.unit.engine.harness import ManualClock

LEASE = ("run", "a", 1)


def test_a_lease_lapses_unless_its_owner_renews_it() -> None:
    clock = ManualClock()
    state = MemoryRunState(clock)
    assert state.claim("run", "a", 1, "w1", 30_000, []).outcome == "go"
    clock.advance(20)
    assert state.renew({LEASE: "w1"}, 30_000) == 1
    clock.advance(20)
    assert state.lease_alive("run", "a", 1)
    clock.advance(11)
    assert not state.lease_alive("run", "a", 1)


def test_a_lapsed_lease_is_taken_by_the_next_delivery() -> None:
    clock = ManualClock()
    state = MemoryRunState(clock)
    state.claim("run", "a", 1, "w1", 30_000, [])
    assert state.claim("run", "a", 1, "w2", 30_000, []).outcome == "busy"
    clock.advance(31)
    claim = state.claim("run", "a", 1, "w2", 30_000, [])
    assert (claim.outcome, claim.deliveries) == ("go", 2)
    # the first owner, back, renews nothing it lost
    assert state.renew({LEASE: "w1"}, 30_000) == 0


def test_renewal_recreates_a_lease_run_state_lost() -> None:
    state = MemoryRunState(ManualClock())
    state.claim("run", "a", 1, "w1", 30_000, [])
    state.forget_run("run")
    assert state.renew({LEASE: "w1"}, 30_000) == 1
    assert state.claim("run", "a", 1, "w2", 30_000, []).flag == "w1"


def test_the_lease_keeper_renews_while_the_step_runs_and_stops_when_dropped() -> None:
    # Given a step's lease of 0.2 s kept by the process's lease keeper
    state = MemoryRunState()
    keeper = LeaseKeeper(lambda: state, lease_seconds=0.2)
    state.claim("run", "a", 1, "w1", 200, [])
    keeper.keep(LEASE, "w1")
    try:
        # Then it outlives its 0.2 s while kept, and lapses once dropped
        time.sleep(0.45)
        assert state.lease_alive("run", "a", 1)
        keeper.drop(LEASE)
        deadline = time.monotonic() + 5
        while state.lease_alive("run", "a", 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not state.lease_alive("run", "a", 1)
    finally:
        keeper.close()
