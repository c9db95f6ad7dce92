"""The guard that keeps a worker alive when kombu uses a Redis channel whose connection was
already released (kombu #970)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

from orchestrator.stores.redis import kombu_fixes


def _channel(transport: Any) -> Any:
    return SimpleNamespace(connection=transport)


@pytest.mark.parametrize("transport", [None, SimpleNamespace(client=None)])
def test_a_released_connection_is_a_connection_error(transport: Any) -> None:
    # Given a channel whose connection (or its client) is gone, When it needs a pool,
    # Then the error is one Celery handles by reconnecting, not an AttributeError
    with pytest.raises(redis.exceptions.ConnectionError):
        kombu_fixes.connparams(_channel(transport))


def test_a_live_connection_gets_kombus_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kombu_fixes, "_original", lambda self, asynchronous: {"ok": asynchronous})
    live = _channel(SimpleNamespace(client=object()))
    assert kombu_fixes.connparams(live, asynchronous=True) == {"ok": True}


def test_connection_errors_of_the_transport_include_it() -> None:
    assert issubclass(redis.exceptions.ConnectionError, kombu_redis.Transport.connection_errors)


def test_install_replaces_kombus_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kombu_redis.Channel, "_connparams", kombu_fixes._original)
    kombu_fixes.install()
    assert kombu_redis.Channel._connparams is kombu_fixes.connparams
