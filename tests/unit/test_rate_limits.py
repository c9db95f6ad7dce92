"""Rate limits: the sliding window on the in-memory twin (exact, on a clock the test holds),
the option's validation, and keys from CEL over the run's inputs."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from orchestrator import Workflow
from orchestrator.core.rate_limits import KeyFailed, RateLimitSpec, resolve_key, slide
from orchestrator.core.spec import parse_spec
from orchestrator.errors import RateLimitError, ValidationError
from orchestrator.ops.metrics import HistoryCollector
from orchestrator.stores.memory.rate_limits import MemoryRateLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def most_in_a_window(starts: list[float], period: float) -> int:
    """The most starts any half-open window [t, t + period) holds."""
    ordered = sorted(starts)
    return max(
        (sum(1 for s in ordered[i:] if s < first + period) for i, first in enumerate(ordered)),
        default=0,
    )


def test_a_full_window_defers_until_its_oldest_start_leaves() -> None:
    # Given 3 per 10 s, and starts at 0, 2 and 5 s
    clock = Clock()
    limits = MemoryRateLimits(clock)
    for at in (0.0, 2.0, 5.0):
        clock.now = 1000.0 + at
        assert limits.acquire("api", 3, 10.0, f"m{at}") == 0.0
    # When a fourth asks at 6 s
    clock.now = 1006.0
    wait = limits.acquire("api", 3, 10.0, "m6")
    # Then it waits until the first start leaves the window, at 10 s, and is counted as deferred
    assert wait == pytest.approx(4.0)
    assert limits.deferrals() == {"api": 1}
    assert limits.next_start("api", 3, 10.0) == pytest.approx(1010.0)
    # And just before then it is still refused; at 10 s it is admitted
    clock.now = 1009.999
    assert limits.acquire("api", 3, 10.0, "m9") > 0
    clock.now = 1010.0
    assert limits.acquire("api", 3, 10.0, "m10") == 0.0
    # And another key has a window of its own
    assert limits.acquire("other", 3, 10.0, "x") == 0.0


def test_random_arrivals_never_exceed_the_limit_and_each_wait_is_exact() -> None:
    # Given callers arriving at random times against 5 per 1 s, each retrying when told
    rng = random.Random(7)
    clock = Clock()
    limits = MemoryRateLimits(clock)
    pending = sorted(1000.0 + rng.uniform(0, 3) for _ in range(60))
    admitted: list[float] = []
    names = itertools.count()
    while pending:
        clock.now = pending.pop(0)
        wait = limits.acquire("k", 5, 1.0, f"m{next(names)}")
        if wait == 0:
            admitted.append(clock.now)
            continue
        # Then a refused caller is refused a hair before its turn, and admitted at it
        probe = MemoryRateLimits(clock)
        probe.windows = {"k": list(limits.windows["k"])}
        hair = min(1e-6, wait / 2)
        clock.now += wait - hair
        assert probe.acquire("k", 5, 1.0, "probe") > 0
        clock.now += hair
        assert probe.acquire("k", 5, 1.0, "probe") == 0
        pending = sorted([*pending, clock.now])
    # Then every caller started, and no window of 1 s held more than 5 starts
    assert len(admitted) == 60
    assert most_in_a_window(admitted, 1.0) == 5
    assert max(admitted) - min(admitted) >= 11.0  # 60 starts at 5 per second


def test_a_start_given_back_frees_its_slot() -> None:
    clock = Clock()
    limits = MemoryRateLimits(clock)
    assert limits.acquire("k", 1, 5.0, "a") == 0.0
    assert limits.acquire("k", 1, 5.0, "b") > 0
    limits.release("k", "a")
    assert limits.acquire("k", 1, 5.0, "b") == 0.0


def test_slide_keeps_only_the_window() -> None:
    # the start at 1.0 left the window of 11.5; two remain, so a third may start
    wait, kept = slide([1.0, 2.0, 3.0], now=11.5, limit=3, period=10.0)
    assert (wait, kept) == (0.0, [2.0, 3.0, 11.5])
    # full: the next start waits for the one at 2.0 to leave, at 12.0
    wait, kept = slide(kept, now=11.6, limit=3, period=10.0)
    assert wait == pytest.approx(0.4) and kept == [2.0, 3.0, 11.5]


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate_limit", "says"),
    [
        ({"key": "api", "limit": 0, "period": 1}, "limit=0 must be at least 1"),
        ({"key": "api", "limit": 1, "period": 0}, "period=0.0 must be a positive"),
        ({"key": "api", "limit": 1, "period": -2}, "period=-2.0 must be a positive"),
        ({"key": " ", "limit": 1, "period": 1}, "key is empty"),
        ({"limit": 1, "period": 1}, "exactly one of `key`"),
        ({"key": "a", "key_expr": "inputs.t", "limit": 1, "period": 1}, "exactly one of `key`"),
        ({"key_expr": "'a-' +", "limit": 1, "period": 1}, "key_expr does not parse as CEL"),
        ({"key_expr": "tenant", "limit": 1, "period": 1}, "names 'tenant'"),
    ],
)
def test_a_bad_rate_limit_is_a_named_error(rate_limit: dict[str, Any], says: str) -> None:
    # Given a workflow whose step has a rate limit that cannot count
    wf = Workflow("rl-bad").step("call", "tasks.x.call", rate_limit=rate_limit)
    # When it is validated, Then the error names the workflow, the step and the problem
    with pytest.raises(RateLimitError, match=says) as caught:
        _ = wf.spec
    assert "workflow 'rl-bad', step 'call'" in str(caught.value)


def test_yaml_rate_limit_parses_and_a_typo_names_the_key() -> None:
    spec = parse_spec(
        {
            "name": "rl-yaml",
            "steps": [
                {
                    "id": "call",
                    "task": "t",
                    "rate_limit": {"key": "openai", "limit": 60, "period": 60},
                }
            ],
        }
    )
    assert spec.steps[0].rate_limit == RateLimitSpec(key="openai", limit=60, period=60.0)
    with pytest.raises(ValidationError, match="step 'call': key 'limit' is missing"):
        parse_spec(
            {
                "name": "rl-yaml",
                "steps": [{"id": "call", "task": "t", "rate_limit": {"key": "a", "limt": 1}}],
            }
        )


def test_a_celery_rate_limit_string_on_a_step_says_where_it_goes() -> None:
    # Celery's per-worker form belongs on the task; a step's limit is the global one
    says = r"global.*@task\(rate_limit='10/m'\)"
    with pytest.raises(ValidationError, match=says):
        _ = Workflow("rl-celery").step("call", "tasks.x.call", rate_limit="10/m").spec
    step = {"id": "call", "task": "t", "rate_limit": "10/m"}
    with pytest.raises(ValidationError, match=says):
        parse_spec({"name": "rl-celery", "steps": [step]})


def test_a_key_expr_gives_one_key_per_tenant() -> None:
    rl = RateLimitSpec(key_expr="'openai-' + inputs.tenant", limit=1, period=1)
    assert resolve_key(rl, {"tenant": "acme"}) == "openai-acme"
    assert resolve_key(RateLimitSpec(key_expr="inputs.n", limit=1, period=1), {"n": 7}) == "7"
    assert resolve_key(RateLimitSpec(key="openai", limit=1, period=1), {}) == "openai"
    with pytest.raises(KeyFailed, match="failed"):
        resolve_key(rl, {})
    with pytest.raises(KeyFailed, match="string or a number"):
        resolve_key(RateLimitSpec(key_expr="inputs", limit=1, period=1), {"a": 1})


# -- the metric -------------------------------------------------------------------------------


def test_deferrals_are_reported_per_key_even_when_postgresql_is_down() -> None:
    def down() -> Engine:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    def unreadable() -> list[tuple[str, int]]:
        raise ConnectionError("Redis is away")

    collector = HistoryCollector(down, rate_limits=lambda: [("openai", 7), ("acme", 2)])
    assert [(s.name, s.labels, s.value) for f in collector.collect() for s in f.samples] == [
        ("orchestrator_history_up", {}, 0.0),
        ("orchestrator_rate_limited_deferrals_total", {"key": "openai"}, 7.0),
        ("orchestrator_rate_limited_deferrals_total", {"key": "acme"}, 2.0),
    ]
    # and a store that cannot be read leaves the family out, not the scrape
    quiet = HistoryCollector(down, rate_limits=unreadable)
    assert [f.name for f in quiet.collect()] == ["orchestrator_history_up"]


def test_a_rate_limit_on_a_step_that_calls_no_task_is_refused() -> None:
    wf = Workflow("rl-child").step(
        "per_doc", workflow="ingest_one", rate_limit={"key": "api", "limit": 1, "period": 1}
    )
    with pytest.raises(RateLimitError, match="limits the calls of a task"):
        _ = wf.spec
