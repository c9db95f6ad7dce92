"""Steps and workflows of the fault suite's run-time shapes (``test_shapes_faults.py``, and the
fan-outs and child runs of ``test_chaos.py``).

Every worker of the suite imports this module as well as ``tests.faults.effects``
(``harness.TASK_MODULES``), so the child workflows are registered by name in the worker process,
where a parent's ``workflow=`` step looks them up. Every step here writes its effect once per
``current_run.idempotency_key`` and counts its execution, like ``effects``'s.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator import Workflow, current_run, task
from tests.faults import effects
from tests.faults.effects import _write

SHAPES_TASK_MODULES = "tests.faults.effects,tests.faults.shapes"
"""The task modules of a shape test's workers (``harness.TASK_MODULES`` is the same)."""


@task
def items(*args: Any, count: int = 1000, **kwargs: Any) -> list[int]:
    """Write the step's effect; the list a ``for_each`` step maps: ``0 .. count-1``."""
    _write(effect=True)
    return list(range(count))


@task
def sink(values: Any, **kwargs: Any) -> int:
    """Write the step's effect; how many values the parent step returned."""
    _write(effect=True)
    return len(values)


@task
def child_work(*args: Any, seconds: float = 2.0, **kwargs: Any) -> dict[str, Any]:
    """Write the effect, take ``seconds`` (a step to be killed in); the child run's output."""
    _write(effect=True)
    time.sleep(seconds)
    return {"child_run": current_run.run_id, "step": current_run.step_id}


@task
def prepare(*args: Any, seconds: float = 2.0, **kwargs: Any) -> dict[str, Any]:
    """Write the effect; the child run's inputs."""
    _write(effect=True)
    return {"seconds": seconds}


FAN_OUT = (
    Workflow("faults_shapes_fan_out")
    .step("list", items)
    .step("work", effects.effect, for_each="list", kwargs={"sleep": 0.01})
    .step("sink", sink, after="work")
)
CHILD = Workflow("faults_shapes_child").step("work", child_work)
PARENT = (
    Workflow("faults_shapes_parent")
    .step("prepare", prepare)
    .step("child", workflow="faults_shapes_child", after="prepare")
    .step("sink", effects.passthrough, after="child")
)


# -- chaos (tests/faults/test_chaos.py): child workflows a chaos run's step may start -----------
#
# Registered here so that workers know them by name. Each is a fixed plan of chaos steps (their
# ``fails``/``sleep`` kwargs; see ``effects._chaos``): the chaos checker reads the plan from the
# child run's stored spec like any run's.

CHAOS_CHILDREN = {
    # succeeds: attempt 1 of c0 raises, its own @retry (2 attempts) runs attempt 2
    "faults_chaos_child_ok": (
        Workflow("faults_chaos_child_ok")
        .step("c0", effects.chaos_r2, kwargs={"fails": ["raise"], "sleep": 0.2})
        .step("c1", effects.chaos, after="c0", kwargs={"sleep": 0.4})
    ),
    # succeeds: one step long enough to be killed in
    "faults_chaos_child_slow": (
        Workflow("faults_chaos_child_slow").step("c0", effects.chaos, kwargs={"sleep": 1.5})
    ),
    # fails for good (no retry policy): its parent step fails, and so does the parent run
    "faults_chaos_child_fails": (
        Workflow("faults_chaos_child_fails").step(
            "c0", effects.chaos, kwargs={"fails": ["raise"], "sleep": 0.1}
        )
    ),
}
"""Child workflow name -> workflow (``faults_chaos_child_fails`` is the one that fails)."""
