"""The framework's task that runs a child workflow's step (``orchestrator.child_workflow``).

Delivered with a step's context it is that step (:class:`~orchestrator.engine.step.Step`
starts the child run, and ends the step when the child's end is delivered); it has no function
of its own to call.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from orchestrator.core.spec import CHILD_TASK
from orchestrator.engine.task import StepTask


@shared_task(name=CHILD_TASK, base=StepTask)
def child_workflow(*args: Any, **kwargs: Any) -> None:
    """Runs only as a workflow step (a step with ``workflow:``)."""
    raise RuntimeError(f"{CHILD_TASK} runs only as the step of a workflow that names a child")
