"""Unit tests for stores/redis_checks.py: the maxmemory-policy check a worker runs at start."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis

from orchestrator.settings import Settings
from orchestrator.stores.redis.checks import (
    check_eviction_policies,
    eviction_warning,
    maxmemory_policy,
    redis_roles,
)

URL = "redis://:hunter2@cache:6379/0"


class FakeRedis:
    """Answers CONFIG GET maxmemory-policy with ``reply``, or raises it."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply
        self.closed = False

    def config_get(self, pattern: str) -> Any:
        assert pattern == "maxmemory-policy"
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "policy",
    [
        "volatile-lru",
        "volatile-ttl",
        "volatile-lfu",
        "volatile-random",
        "allkeys-lru",
        "allkeys-lfu",
    ],
)
def test_an_evicting_policy_gets_a_warning_saying_what_to_set(policy: str) -> None:
    # Given a Redis that may evict keys / When checked / Then the warning names it and the fix
    warning = eviction_warning(policy, URL, "run state")
    assert warning is not None
    assert repr(policy) in warning and "run state" in warning
    assert "maxmemory-policy noeviction" in warning
    assert "hunter2" not in warning  # the URL is redacted


@pytest.mark.parametrize("policy", ["noeviction", None])
def test_noeviction_or_an_unknown_policy_is_not_warned_about(policy: str | None) -> None:
    assert eviction_warning(policy, URL, "run state") is None


@pytest.mark.parametrize(
    ("reply", "policy"),
    [
        ({"maxmemory-policy": "allkeys-lru"}, "allkeys-lru"),  # decode_responses=True
        ({b"maxmemory-policy": b"noeviction"}, "noeviction"),
        ({}, None),
    ],
)
def test_the_policy_is_read_with_config_get(reply: Any, policy: str | None) -> None:
    assert maxmemory_policy(FakeRedis(reply)) == policy


@pytest.mark.parametrize(
    "error",
    [
        redis.ResponseError("unknown command 'CONFIG'"),  # disabled or renamed (managed Redis)
        redis.ResponseError("NOPERM this user has no permissions to run the 'config' command"),
        redis.ConnectionError("Connection refused"),
    ],
)
def test_a_server_that_refuses_config_is_tolerated_and_logged_at_debug(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a Redis where CONFIG is not allowed / When read / Then no policy and a debug line
    with caplog.at_level(logging.DEBUG, logger="orchestrator"):
        assert maxmemory_policy(FakeRedis(error)) is None
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_each_redis_url_is_checked_once_with_what_it_holds() -> None:
    settings = Settings(
        broker_url="amqp://guest@rabbit//",
        result_backend="redis://cache:6379/1",
        redis_url="redis://cache:6379/2",
    )
    assert redis_roles(settings) == {
        "redis://cache:6379/2": ["run state"],
        "redis://cache:6379/1": ["result backend"],
    }
    shared = Settings(broker_url="redis://cache:6379/0", result_backend=None, redis_url=None)
    assert redis_roles(shared) == {
        "redis://cache:6379/0": ["run state", "result backend", "broker"]
    }


def test_the_worker_check_logs_a_warning_per_evicting_redis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given one Redis for everything, with allkeys-lru
    settings = Settings(broker_url=URL, result_backend=None, redis_url=None)
    clients: list[FakeRedis] = []

    def connect(url: str, **options: Any) -> FakeRedis:
        assert url == URL and options["socket_connect_timeout"] > 0
        clients.append(FakeRedis({"maxmemory-policy": "allkeys-lru"}))
        return clients[-1]

    # When the worker checks it at start
    with caplog.at_level(logging.WARNING, logger="orchestrator"):
        warnings = check_eviction_policies(settings, connect)
    # Then one warning is logged, naming what the server holds, and the client is closed
    assert len(warnings) == 1 and "run state, result backend, broker" in warnings[0]
    assert [r.getMessage() for r in caplog.records] == warnings
    assert all(c.closed for c in clients)
