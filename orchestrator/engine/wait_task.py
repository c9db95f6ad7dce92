"""The framework's task of ``sleep`` and ``wait_for`` steps (``orchestrator.wait``).

Delivered with a step's context it is that step (:class:`~orchestrator.engine.step.Step` parks
it, and ends it when a wake-up is delivered: :mod:`orchestrator.engine.sleeping`); it has no
function of its own to call.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.core.wait_checks import WAIT_TASK
from orchestrator.engine import sleep_reasons  # noqa: F401  (their waiting_for registers)
from orchestrator.engine.task import StepTask


@shared_task(name=WAIT_TASK, base=StepTask)
def wait_step(*args: Any, **kwargs: Any) -> None:
    """Runs only as a workflow step (a step with ``sleep:`` or ``wait_for:``)."""
    raise RuntimeError(f"{WAIT_TASK} runs only as the step of a workflow that sleeps or waits")
