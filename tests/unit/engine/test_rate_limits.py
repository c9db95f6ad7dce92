"""A step's rate limit in the engine, on in-memory twins: a full window defers the step (no
attempt used) until its turn, on the harness's clock; per-tenant keys; what waiting says."""

from __future__ import annotations

from typing import Any

from orchestrator import Workflow, circuit_breaker, current_run, task
from orchestrator.engine.rate_limits import rate_limit_waiting
from orchestrator.engine.services import services_of
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.memory.rate_limits import MemoryRateLimits
from orchestrator.testing import run_inline
from tests.unit.engine.harness import Engine
from tests.unit.test_rate_limits import most_in_a_window

STARTS: list[tuple[str, str, float]] = []  # run id, step id, start time on the harness's clock


LAG = 0.05  # seconds between an admission and the task reading the clock, with room for load


@task(bind=True)
def limited_call(self: Any, item: Any = None, **_: Any) -> Any:
    limits = services_of(self.app).rate_limits
    assert isinstance(limits, MemoryRateLimits)
    STARTS.append((current_run.run_id, current_run.step_id, limits.clock()))
    return item


@task
def items(count: int, **_: Any) -> list[int]:
    return list(range(count))


@task
@circuit_breaker("rl-breaker", failure_threshold=1, reset_timeout=60.0)
def guarded_call(**_: Any) -> str:
    return "ok"


def mapped(name: str, rate_limit: dict[str, Any]) -> Workflow:
    return (
        Workflow(name)
        .step("list", items)
        .step("call", limited_call, for_each="list", rate_limit=rate_limit)
    )


def starts_of(run_id: str) -> list[float]:
    return [at for r, step, at in STARTS if r == run_id and step.startswith("call[")]


def test_a_full_window_defers_items_without_using_attempts(engine: Engine) -> None:
    # Given 12 items of a step limited to 5 starts per 10 s
    wf = mapped("rl_map", {"key": "unit-api", "limit": 5, "period": 10.0})
    run = engine.start(wf, {"count": 12})
    # When the run is driven to its end (the harness's clock skips the waits)
    engine.finish(run)
    # Then every item succeeded on its first attempt
    assert run.status() == RunStatus.SUCCEEDED
    assert run.wait(timeout=1) == list(range(12))
    called = [s for s in run.steps() if s.step_id.startswith("call[")]
    assert len(called) == 12
    assert {(s.status, s.attempts) for s in called} == {(StepStatus.SUCCEEDED, 1)}
    # And no 10-s window held more than 5 starts: three waves, 10 s apart (a start is read off
    # the clock a moment after the limiter admitted it, so windows are shortened by that lag)
    starts = starts_of(run.id)
    assert len(starts) == 12 and most_in_a_window(starts, 10.0 - LAG) == 5
    assert max(starts) - min(starts) >= 20.0
    # And the deferrals were counted under the key
    assert services_of(engine.app).rate_limits.deferrals()["unit-api"] >= 7


def test_tenants_have_windows_of_their_own(engine: Engine) -> None:
    # Given a limit of 2 per 10 s per tenant, and two runs for two tenants
    rl = {"key_expr": "'unit-' + inputs.tenant", "limit": 2, "period": 10.0}
    wf = mapped("rl_tenants", rl)
    acme = engine.start(wf, {"count": 2, "tenant": "acme"})
    globex = engine.start(wf, {"count": 2, "tenant": "globex"})
    # When both run
    engine.finish(acme)
    engine.finish(globex)
    # Then neither waited for the other: all four started within the same window
    both = starts_of(acme.id) + starts_of(globex.id)
    assert len(both) == 4 and max(both) - min(both) < 1.0
    limits = services_of(engine.app).rate_limits
    assert isinstance(limits, MemoryRateLimits)
    assert len(limits.starts("unit-acme")) == 2 and len(limits.starts("unit-globex")) == 2


def test_a_key_expr_that_fails_fails_the_step_naming_it(engine: Engine) -> None:
    # Given a per-tenant limit and a run without a tenant
    wf = Workflow("rl_no_tenant").step(
        "call", limited_call, rate_limit={"key_expr": "inputs.tenant", "limit": 1, "period": 1}
    )
    run = engine.start(wf, {})
    engine.finish(run)
    # Then the step failed at once, without being called, and says why
    assert run.status() == RunStatus.FAILED
    [step] = run.steps()
    assert step.status == StepStatus.FAILED
    assert "RateLimitKeyError" in (step.error or "") and "'call'" in (step.error or "")
    assert not [s for s in STARTS if s[0] == run.id]


def test_waiting_says_when_the_next_start_is_allowed(engine: Engine) -> None:
    # Given a window that one start fills
    wf = Workflow("rl_wait").step(
        "call", limited_call, rate_limit={"key": "unit-wait", "limit": 1, "period": 30.0}
    )
    rt = services_of(engine.app)
    planned = wf.spec.steps[0]
    assert rate_limit_waiting(rt, "r", "rl_wait", planned) is None
    rt.rate_limits.acquire("unit-wait", 1, 30.0, "someone")
    # Then a step of it waits for the rate limit, with the key, the limit and the time
    detail = rate_limit_waiting(rt, "r", "rl_wait", planned)
    assert detail is not None
    assert detail.startswith("rate limit 'unit-wait' (1 per 30s) full; next start at ")


def test_a_start_deferred_by_an_open_breaker_is_given_back(engine: Engine) -> None:
    # Given an open breaker on a rate-limited step
    rt = services_of(engine.app)
    cfg = guarded_call.breaker
    rt.breakers.report(cfg, ok=False, trial=False)
    wf = Workflow("rl_breaker").step(
        "call", guarded_call, rate_limit={"key": "unit-breaker", "limit": 5, "period": 600.0}
    )
    run = engine.start(wf, {})
    engine.finish(run)
    # Then the step ran once the breaker half-opened, and only that start is counted
    assert run.wait(timeout=1) == "ok"
    assert run.steps()[0].attempts == 1
    limits = rt.rate_limits
    assert isinstance(limits, MemoryRateLimits)
    assert len(limits.starts("unit-breaker")) == 1


def test_run_inline_skips_the_waits() -> None:
    # Given 7 items against 3 per minute, When run inline
    run = run_inline(
        mapped("rl_inline", {"key": "unit-inline", "limit": 3, "period": 60}), {"count": 7}
    )
    # Then it succeeds at once (the harness skips the waits), each item on its first attempt
    assert run.wait(timeout=1) == list(range(7))
    assert {s.attempts for s in run.steps() if s.step_id.startswith("call[")} == {1}
    assert most_in_a_window(starts_of(run.id), 60.0 - LAG) == 3


def test_a_wait_longer_than_a_broker_may_hold_goes_through_the_delay_store(engine: Engine) -> None:
    # Given two siblings sharing 1 start per hour (longer than half the visibility timeout)
    rl = {"key": "unit-hourly", "limit": 1, "period": 3600.0}
    wf = (
        Workflow("rl_hourly")
        .step("a", limited_call, rate_limit=rl)
        .step("b", limited_call, rate_limit=rl)
    )
    run = engine.start(wf, {})
    # When messages are executed one by one, Then the deferred one waits in the delay store
    held = False
    while not held and engine.worker.deliver() is not None:
        held = engine.delays.size() == 1
    assert held
    # And once the harness's clock reaches its turn it runs, on its first attempt
    engine.finish(run)
    assert run.status() == RunStatus.SUCCEEDED
    assert [s.attempts for s in run.steps()] == [1, 1]
    starts = sorted(at for r, _, at in STARTS if r == run.id)
    assert starts[1] - starts[0] >= 3600.0
