"""The backoff schedule and retry decisions (pure, no servers)."""

from __future__ import annotations

import random

import pytest

from orchestrator import RetryPolicy, retry


def test_delays_grow_exponentially_and_stop_at_the_cap() -> None:
    # Given base 1 s, backoff 2, cap 10 s, no jitter
    policy = RetryPolicy(max_attempts=8, base_delay=1.0, backoff=2.0, max_delay=10.0, jitter=False)
    # When attempts 1..6 fail / Then the waits are 1, 2, 4, 8, 10, 10
    assert [policy.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_draws_between_zero_and_the_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, backoff=3.0, max_delay=100.0, jitter=True)
    rng = random.Random(7)
    draws = [policy.delay(3, rng.uniform) for _ in range(2000)]
    assert all(0.0 <= d <= 9.0 for d in draws)
    assert min(draws) < 0.5 and max(draws) > 8.5  # spread over the whole range


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=60.0, jitter=False).delay(10_000) == 60.0


def test_only_listed_exceptions_are_retried_and_attempts_are_bounded() -> None:
    policy = RetryPolicy(max_attempts=3, on=(ConnectionError, "TimeoutError"))
    assert policy.should_retry(ConnectionResetError(), 1)  # a subclass counts
    assert policy.should_retry(TimeoutError(), 2)  # named as a string (YAML)
    assert not policy.should_retry(ValueError(), 1)
    assert not policy.should_retry(ConnectionError(), 3)  # the third attempt was the last


def test_empty_on_retries_every_exception_but_not_base_exceptions() -> None:
    policy = RetryPolicy(max_attempts=2)
    assert policy.should_retry(KeyError(), 1)
    assert not policy.should_retry(KeyboardInterrupt(), 1)


def test_step_overrides_merge_over_the_task_policy() -> None:
    base = RetryPolicy(max_attempts=5, base_delay=2.0, on=(ConnectionError,))
    merged = base.merged(max_attempts=2, base_delay=None, on=())
    assert merged.max_attempts == 2 and merged.base_delay == 2.0
    assert merged.on == (ConnectionError,)


def test_decorator_attaches_the_policy_and_refuses_zero_attempts() -> None:
    @retry(max_attempts=4, on=ValueError)
    def f() -> None: ...

    assert f.retry_policy == RetryPolicy(max_attempts=4, on=(ValueError,))  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="at least 1"):
        retry(max_attempts=0)
