"""Run and step statuses, which of them are terminal, and which end a step's attempt."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a workflow run stands."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in RUN_TERMINAL


class StepStatus(StrEnum):
    """Where one step of a run stands."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in STEP_TERMINAL


class Trigger(StrEnum):
    """What started a run."""

    API = "api"
    SCHEDULE = "schedule"
    CLI = "cli"
    RETRY = "retry"
    CHILD = "child"


RUN_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
STEP_TERMINAL = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
ATTEMPT_ENDED = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.RETRYING})
"""A step event with one of these ends its attempt (``retrying``: it failed, another follows)."""
