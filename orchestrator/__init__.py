"""orchestrator: workflows as DAGs of Celery tasks, compiled to canvas, tracked in PostgreSQL.

Glossary (the words the code and its docstrings use):

- **run**: one execution of a workflow with its inputs (a row of ``workflow_runs``); ends
  ``succeeded``, ``failed`` or ``cancelled``, and every run ends.
- **step**: one node of the workflow's DAG, running one Celery task; in a run, a row of
  ``task_runs`` with its status.
- **item**: one call of a step that fans out over a list (``for_each``, design.md §4), recorded
  as a step of its own (``parse[0]``, ...).
- **attempt**: one try of a step (a row of ``task_attempts``); a retry is the next attempt,
  published by the framework, never by ``Task.retry``.
- **segment**: a part of the plan published as one canvas message (chain, group or chord of at
  most 24 signatures); the planner cuts the DAG into segments (``core.planner``).
- **join**: a counter in Redis that publishes a segment once all its parent steps succeeded (the
  exact dependency semantics, without ``chord_unlock``).
- **epoch**: the generation of a run's plan: 0 at submit, +1 each time recovery re-plans what is
  left of the run; join counters and plans are per epoch.
- **claim**: what a delivery of a step's message does first (one Redis script): go, or why not
  (already done, running elsewhere, a stale copy, the run paused, cancelled or failed).
- **lease**: the claim's hold on ``(run, step, attempt)``, renewed while the step runs; a lapsed
  lease means its worker died.
- **park**: a paused run keeps the messages of steps that would start; ``resume`` publishes them.
- **flag**: the run's control flag in Redis (``paused``, ``cancelled``, or the failure), read by
  every claim so nothing new starts in a run that must stop.
- **recovery**: the reconciler's work (``ops.reconciler``): finishing runs whose end was not
  written, republishing lost messages, and re-planning runs whose worker died, under a new epoch.

Where to start reading: ``workflow.py`` (how a workflow is defined), ``engine/submit.py`` (what
a submit writes and publishes), ``engine/step.py`` (what a worker does with a step's message),
``ports.py`` (what the engine needs from Redis and PostgreSQL), and ``app.py`` (how it is wired).
"""

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
