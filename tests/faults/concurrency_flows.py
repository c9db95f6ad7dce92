"""The workflow of the concurrency fault test (``test_concurrency_faults.py``): one run at a
time, one step that writes its effect and takes a while (``shapes.child_work``)."""

from __future__ import annotations

from orchestrator import Workflow
from tests.faults import shapes

TASK_MODULES = f"{shapes.SHAPES_TASK_MODULES},tests.faults.concurrency_flows"

ONE_AT_A_TIME = Workflow("faults_one_at_a_time", concurrency={"max_runs": 1}).step(
    "work", shapes.child_work
)
