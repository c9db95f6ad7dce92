"""orchestrator: workflows as DAGs of Celery tasks, compiled to canvas, tracked in PostgreSQL."""

from orchestrator.app import create_app, task
from orchestrator.client import get_run, list_runs, run_workflow
from orchestrator.context import current_run
from orchestrator.core.backoff import RetryPolicy, retry
from orchestrator.core.breaker import BreakerConfig, circuit_breaker
from orchestrator.core.spec import RetrySpec, ScheduleSpec, StepSpec, WorkflowSpec
from orchestrator.engine.handle import RunHandle, StepRun
from orchestrator.errors import (
    CircuitOpenError,
    CycleError,
    DuplicateStepError,
    EmptyWorkflowError,
    InputError,
    InvalidTransition,
    OrchestratorError,
    RunNotFound,
    ScheduleError,
    ServiceUnavailable,
    UnknownDependencyError,
    UnknownTaskError,
    ValidationError,
    WorkflowFailed,
    WorkflowNotFound,
)
from orchestrator.status import RunStatus, StepStatus, Trigger
from orchestrator.workflow import Step, Workflow

Schedule = ScheduleSpec

__all__ = [
    "BreakerConfig",
    "RetryPolicy",
    "circuit_breaker",
    "retry",
    "CircuitOpenError",
    "CycleError",
    "DuplicateStepError",
    "EmptyWorkflowError",
    "InputError",
    "InvalidTransition",
    "OrchestratorError",
    "RetrySpec",
    "RunHandle",
    "RunNotFound",
    "RunStatus",
    "Schedule",
    "ScheduleError",
    "ScheduleSpec",
    "ServiceUnavailable",
    "Step",
    "StepRun",
    "StepSpec",
    "StepStatus",
    "Trigger",
    "UnknownDependencyError",
    "UnknownTaskError",
    "ValidationError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowNotFound",
    "WorkflowSpec",
    "create_app",
    "current_run",
    "get_run",
    "list_runs",
    "run_workflow",
    "task",
]
