"""The guard that keeps a worker alive when kombu restores unacked messages after its Redis
connection closed (kombu #970)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kombu.transport import redis as kombu_redis

from orchestrator import kombu_fixes


def _qos(pool: Any, client: Any) -> Any:
    channel = SimpleNamespace(_pool=pool, connection=SimpleNamespace(client=client))
    return SimpleNamespace(channel=channel, _delivered={"tag": 1})


def test_a_closed_connection_leaves_the_messages_to_redis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a channel whose connection was released and that never built a pool
    qos = _qos(pool=None, client=None)
    # When kombu restores its unacked messages, Then the worker goes on (no AttributeError)
    assert kombu_fixes.restore_unacked(qos) is None
    assert "1 unacknowledged message(s) left in Redis" in caplog.text


def test_a_live_connection_restores_as_kombu_does(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(kombu_fixes, "_original", lambda self, client: calls.append(client))
    kombu_fixes.restore_unacked(_qos(pool=None, client=object()))
    kombu_fixes.restore_unacked(_qos(pool=None, client=None), client="given")
    assert calls == [None, "given"]


def test_install_replaces_kombus_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kombu_redis.QoS, "restore_unacked", kombu_fixes._original)
    kombu_fixes.install()
    assert kombu_redis.QoS.restore_unacked is kombu_fixes.restore_unacked
