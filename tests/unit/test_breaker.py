"""The circuit-breaker state machine with an in-memory store and a fake clock."""

from __future__ import annotations

import threading

import pytest

from orchestrator import circuit_breaker
from orchestrator.core.breaker import BreakerConfig, BreakerState, decide, record
from orchestrator.stores.memory.breakers import MemoryBreakerStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryBreakerStore:
    return MemoryBreakerStore(clock)


CFG = BreakerConfig("db", failure_threshold=3, reset_timeout=30.0)


def _fail(store: MemoryBreakerStore, times: int) -> None:
    for _ in range(times):
        decision, _ = store.acquire(CFG)
        store.report(CFG, ok=False, trial=decision == "trial")


def test_opens_after_threshold_consecutive_failures(store: MemoryBreakerStore) -> None:
    _fail(store, 2)
    assert store.get("db").state == "closed"
    _fail(store, 1)
    assert store.get("db").state == "open"
    assert store.acquire(CFG) == ("defer", 30.0)


def test_a_success_resets_the_consecutive_count(store: MemoryBreakerStore) -> None:
    _fail(store, 2)
    store.report(CFG, ok=True, trial=False)
    _fail(store, 2)
    assert store.get("db").state == "closed"


def test_half_open_lets_exactly_one_trial_through(store: MemoryBreakerStore, clock: Clock) -> None:
    # Given an open breaker whose reset timeout has passed
    _fail(store, 3)
    clock.now += 30.0
    # When several callers ask at once / Then one gets the trial, the others wait
    decisions = [store.acquire(CFG)[0] for _ in range(5)]
    assert decisions == ["trial", "defer", "defer", "defer", "defer"]
    assert store.get("db").state == "half_open"


def test_successful_trial_closes_and_failed_trial_reopens(
    store: MemoryBreakerStore, clock: Clock
) -> None:
    _fail(store, 3)
    clock.now += 30.0
    assert store.acquire(CFG)[0] == "trial"
    store.report(CFG, ok=False, trial=True)
    assert store.get("db").state == "open"
    assert store.acquire(CFG) == ("defer", 30.0)  # the timeout starts again
    clock.now += 30.0
    assert store.acquire(CFG)[0] == "trial"
    store.report(CFG, ok=True, trial=True)
    assert store.get("db") == BreakerState("closed", 0, 1000.0 + 30.0, 1060.0, 1, 4)
    assert store.acquire(CFG)[0] == "call"


def test_a_lost_trial_is_replaced_after_the_trial_timeout(clock: Clock) -> None:
    cfg = BreakerConfig("x", failure_threshold=1, reset_timeout=1.0, trial_timeout=10.0)
    state = record(BreakerState(), cfg, ok=False, trial=False, now=clock.now)
    decision, state, _ = decide(state, cfg, clock.now + 1.0)
    assert decision == "trial"
    assert decide(state, cfg, clock.now + 5.0)[0] == "defer"
    assert decide(state, cfg, clock.now + 11.0)[0] == "trial"


def test_transitions_are_kept(store: MemoryBreakerStore, clock: Clock) -> None:
    _fail(store, 3)
    clock.now += 30.0
    decision, _ = store.acquire(CFG)
    store.report(CFG, ok=True, trial=decision == "trial")
    assert [(t["from"], t["to"]) for t in store.history("db")] == [
        ("half_open", "closed"),
        ("open", "half_open"),
        ("closed", "open"),
    ]
    assert store.names() == ["db"]


def test_concurrent_callers_get_one_trial(store: MemoryBreakerStore, clock: Clock) -> None:
    _fail(store, 3)
    clock.now += 30.0
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.acquire(CFG)[0])) for _ in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("trial") == 1


def test_only_configured_exceptions_count_as_failures() -> None:
    cfg = BreakerConfig("y", on=(ConnectionError,))
    assert cfg.counts(ConnectionResetError()) and not cfg.counts(ValueError())

    @circuit_breaker("svc", failure_threshold=2, reset_timeout=5.0, on=ConnectionError)
    def f() -> None: ...

    assert f.breaker == BreakerConfig("svc", 2, 5.0, (ConnectionError,))  # type: ignore[attr-defined]


def test_a_reset_closes_the_breaker_and_keeps_its_log(store: MemoryBreakerStore) -> None:
    _fail(store, 3)
    store.reset("db")
    assert store.get("db") == BreakerState()
    assert store.acquire(CFG)[0] == "call"
    assert [t["to"] for t in store.history("db")] == ["open"]
