"""The prefork pool guard: a pool process untracked as it exited is not tracked again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.concurrency.asynpool import AsynPool

from orchestrator.ops import pool_guard


class Hub:
    def __init__(self) -> None:
        self.readers: list[Any] = []

    def add_reader(self, fd: Any, *args: Any) -> None:
        from kombu.utils.compat import fileno

        self.readers.append(fileno(fd))


def test_a_process_untracked_as_it_exited_is_skipped_not_fatal() -> None:
    # Given a pool process that exited and was untracked (its sentinel's duplicate is None)
    exited = SimpleNamespace(_sentinel_poll=None)
    hub = Hub()
    # Celery's own tracking stops the worker on it (this release)
    with pytest.raises(ValueError, match="file descriptor is None"):
        pool_guard._original(SimpleNamespace(_event_process_exit=None), exited, hub)
    # When the guard is installed, it is skipped, and a live process is still tracked
    pool_guard.install()
    AsynPool._track_child_process(SimpleNamespace(_event_process_exit=None), exited, hub)
    assert hub.readers == []
    live = SimpleNamespace(_sentinel_poll=7)
    AsynPool._track_child_process(SimpleNamespace(_event_process_exit=None), live, hub)
    assert hub.readers == [7]
