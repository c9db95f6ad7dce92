"""Checks of ``sleep`` and ``wait_for`` steps before anything is published.

A ``sleep`` waits a positive number of seconds; a ``wait_for`` names its signal, and may set a
``timeout`` (seconds, > 0) and ``on_timeout`` (``fail`` or ``skip``). Neither runs a task of its
own, maps over items or starts a child workflow, and a step is one or the other. Each problem
is a :class:`~orchestrator.errors.WaitError` naming the workflow and the step.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from orchestrator.errors import WaitError

if TYPE_CHECKING:
    from orchestrator.core.spec import StepSpec, WorkflowSpec

WAIT_TASK = "orchestrator.wait"
"""The framework's task of ``sleep`` and ``wait_for`` steps: parks the step, ends it later."""
ON_TIMEOUT = ("fail", "skip")
SIGNAL_NAME = r"^[A-Za-z0-9_.:\-]{1,200}$"
"""What a signal name may be: letters, digits and ``_ . : -``, at most 200 characters."""


def check_waits(spec: WorkflowSpec) -> None:
    """Each wait step waits for something it can wait for; raises ``WaitError``."""
    for step in spec.steps:
        if not step.waits:
            if step.task == WAIT_TASK:  # `wait_for:` or `sleep:` given empty
                _fail(
                    spec,
                    step,
                    "wait_for has no signal name (or sleep no seconds); name the signal it "
                    "waits for, or the seconds it sleeps",
                )
            if step.on_timeout is not None:
                _fail(spec, step, "on_timeout applies only to a wait_for step")
            continue
        if step.task != WAIT_TASK:
            _fail(spec, step, f"a sleep or wait_for step runs no task (it names {step.task!r})")
        if step.sleep is not None and step.wait_for is not None:
            _fail(spec, step, "is both a sleep and a wait_for step; make them two steps")
        if step.for_each is not None or step.workflow is not None:
            _fail(spec, step, "a sleep or wait_for step cannot have for_each or workflow")
        if step.sleep is not None:
            _check_sleep(spec, step, step.sleep)
        else:
            _check_wait_for(spec, step)


def _check_sleep(spec: WorkflowSpec, step: StepSpec, seconds: float) -> None:
    if not math.isfinite(seconds) or seconds <= 0:
        _fail(spec, step, f"sleep must be a positive number of seconds, not {seconds!r}")
    if step.timeout is not None or step.on_timeout is not None:
        _fail(spec, step, "a sleep step takes no timeout or on_timeout (it ends when it is due)")


def _check_wait_for(spec: WorkflowSpec, step: StepSpec) -> None:
    name = step.wait_for or ""
    if not re.match(SIGNAL_NAME, name):
        what = "no signal name" if not name.strip() else f"a bad signal name {name!r}"
        _fail(
            spec,
            step,
            f"wait_for has {what}; name the signal it waits for (letters, digits, _ . : -), "
            'e.g. wait_for("approval", signal="approved")',
        )
    if step.on_timeout is not None and step.on_timeout not in ON_TIMEOUT:
        _fail(spec, step, f"on_timeout must be 'fail' or 'skip', not {step.on_timeout!r}")
    if step.on_timeout is not None and step.timeout is None:
        _fail(spec, step, "on_timeout needs a timeout (seconds the step waits for its signal)")


def _fail(spec: WorkflowSpec, step: StepSpec, problem: str) -> None:
    raise WaitError(spec.name, problem, step.id)
