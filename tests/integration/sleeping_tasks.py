"""Tasks of the sleep/wait_for/signal integration tests (``test_waiting.py``); the worker of
those tests imports this module."""

from __future__ import annotations

import time
from typing import Any

from orchestrator import current_run, task


@task
def echo(value: Any = None, **kwargs: Any) -> Any:
    """The step's input, as received (a signal's payload, a sleep's passed-on result)."""
    return value if value is not None else kwargs or None


@task
def steered(seconds: float) -> list[Any]:
    """Read the run's ``steer`` signals until one says ``stop`` (at most ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = current_run.signals("steer")
        if "stop" in seen:
            return seen
        time.sleep(0.2)
    return current_run.signals("steer")
