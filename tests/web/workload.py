"""Tasks and workflows the console's tests run (``ORCHESTRATOR_TASK_MODULES`` lists this).

``wait_for`` holds its run until the test creates a file, so a page can be watched while the
run goes on; ``needs`` fails until the test creates a file, so a failed run can be retried (or
its dead letter replayed) and then succeed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator import task
from orchestrator.workflow import Workflow

GATE_TIMEOUT = 60.0


@task
def wait_for(gate: str) -> str:
    """Return once the file ``gate`` exists (a test opens it)."""
    deadline = time.monotonic() + GATE_TIMEOUT
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} was not created within {GATE_TIMEOUT}s")
        time.sleep(0.05)
    return gate


@task
def count(value: str) -> int:
    return len(value)


@task
def join(parents: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(parents.items()))


@task
def needs(marker: str) -> str:
    """Fail until the file ``marker`` exists."""
    if not Path(marker).exists():
        raise FileNotFoundError(f"{marker} is not there yet")
    return "found " + Path(marker).name


@task
def check(found: str) -> str:
    return found.upper()


gated = (
    Workflow("console_gated", description="waits for a file, fans out, joins")
    .step("open", wait_for)
    .step("left", count, after="open")
    .step("right", count, after="open")
    .step("join", join, after=["left", "right"])
)

flaky = (
    Workflow("console_flaky", description="fails until its marker file exists")
    .step("needs", needs)
    .step("check", check, after="needs")
)
