"""The public surface of design.md §1 is importable from ``orchestrator`` and pinned."""

from __future__ import annotations

import orchestrator

DESIGN = {
    "task",
    "retry",
    "circuit_breaker",
    "current_run",
    "Workflow",
    "Step",
    "Schedule",
    "run_workflow",
    "get_run",
    "list_runs",
    "create_app",
    "RunStatus",
    "StepStatus",
    "OrchestratorError",
    "PriorityError",
    "QueueTimeout",
    "RunNotFound",
    "WorkflowFailed",
    "CircuitOpenError",
    "CycleError",
    "DuplicateStepError",
    "EmptyWorkflowError",
    "InputError",
    "ScheduleError",
    "UnknownDependencyError",
    "UnknownTaskError",
    "ValidationError",
}


def test_all_is_pinned() -> None:
    assert set(orchestrator.__all__) == DESIGN | {
        "BreakerConfig",
        "InvalidTransition",
        "RetryPolicy",
        "RetrySpec",
        "RunHandle",
        "ScheduleSpec",
        "ServiceUnavailable",
        "SignalError",
        "SignalRecord",
        "WaitError",
        "RateLimitError",
        "RateLimitSpec",
        "ContextError",
        "WorkerInfo",
        "workers",
        "StepRun",
        "StepSpec",
        "Trigger",
        "WorkflowNotFound",
        "WorkflowSpec",
    }
    for name in orchestrator.__all__:
        assert getattr(orchestrator, name) is not None


def test_every_error_derives_from_orchestrator_error() -> None:
    for name in orchestrator.__all__:
        value = getattr(orchestrator, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, orchestrator.OrchestratorError), name


def test_statuses_are_the_design_strings() -> None:
    assert [s.value for s in orchestrator.RunStatus] == [
        "pending",
        "running",
        "paused",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in orchestrator.StepStatus] == [
        "pending",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
    ]
