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
  A ``sleep`` or ``wait_for`` step parks too, in PostgreSQL (``step_waits``), until its *wake-up*
  (its time, a signal, or the reconciler) is delivered (``engine.sleeping``).
- **signal**: a named JSON payload sent to a run (``run.signal``), kept in ``run_signals``; it
  ends ``wait_for`` steps and steers running ones (``current_run.signals``).
- **flag**: the run's control flag in Redis (``paused``, ``cancelled``, or the failure), read by
  every claim so nothing new starts in a run that must stop.
- **context**: a run's shared JSON dict (``current_run.context``, ``run.context()``): set
  atomically per key in Redis, kept in history (``engine.run_context``).
- **waiting_for**: why a step that has not ended is not running (paused, retry_delay, breaker,
  queue, child_run, ...), computed when read by the probes of ``engine.waiting``.
- **rate limit**: at most ``limit`` step starts per ``period`` seconds per key, counted in Redis
  across every worker (``core.rate_limits``); a start over it is deferred, not an attempt.
- **slot**: a run's place among the ``max_runs`` runs of its workflow (per value of its CEL
  key) that may run at once (``concurrency``, ``core.concurrency``); a run over the limit waits
  in *line*, ``pending``, and starts when a run that ends frees a slot (``engine.concurrency``).
- **heartbeat**: a worker's entry in the registry of workers, renewed every 5 s; silent for 15 s
  the worker is ``lost`` (``ops.workers``).
- **recovery**: the reconciler's work (``ops.reconciler``): finishing runs whose end was not
  written, republishing lost messages, and re-planning runs whose worker died, under a new epoch.

Where to start reading: ``workflow.py`` (how a workflow is defined), ``engine/submit.py`` (what
a submit writes and publishes), ``engine/step.py`` (what a worker does with a step's message),
``ports.py`` (what the engine needs from Redis and PostgreSQL), and ``app.py`` (how it is wired).
"""

from orchestrator.app import create_app, task
from orchestrator.client import get_run, list_runs, run_workflow, workers
from orchestrator.context import current_run
from orchestrator.core.backoff import RetryPolicy, retry
from orchestrator.core.breaker import BreakerConfig, circuit_breaker
from orchestrator.core.rate_limits import RateLimitSpec
from orchestrator.core.spec import RetrySpec, ScheduleSpec, StepSpec, WorkflowSpec
from orchestrator.engine.handle import RunHandle, StepRun
from orchestrator.errors import (
    CircuitOpenError,
    ContextError,
    CycleError,
    DuplicateStepError,
    EmptyWorkflowError,
    InputError,
    InvalidTransition,
    OrchestratorError,
    PriorityError,
    QueueTimeout,
    RateLimitError,
    RunNotFound,
    ScheduleError,
    ServiceUnavailable,
    SignalError,
    UnknownDependencyError,
    UnknownTaskError,
    ValidationError,
    WaitError,
    WorkflowFailed,
    WorkflowNotFound,
)
from orchestrator.records import SignalRecord, WorkerInfo
from orchestrator.status import RunStatus, StepStatus, Trigger
from orchestrator.workflow import Step, Workflow

Schedule = ScheduleSpec

__all__ = [
    "BreakerConfig",
    "RetryPolicy",
    "circuit_breaker",
    "retry",
    "CircuitOpenError",
    "ContextError",
    "CycleError",
    "DuplicateStepError",
    "EmptyWorkflowError",
    "InputError",
    "InvalidTransition",
    "OrchestratorError",
    "PriorityError",
    "QueueTimeout",
    "RateLimitError",
    "RateLimitSpec",
    "RetrySpec",
    "RunHandle",
    "RunNotFound",
    "RunStatus",
    "Schedule",
    "ScheduleError",
    "ScheduleSpec",
    "ServiceUnavailable",
    "SignalError",
    "SignalRecord",
    "Step",
    "StepRun",
    "StepSpec",
    "StepStatus",
    "Trigger",
    "UnknownDependencyError",
    "UnknownTaskError",
    "ValidationError",
    "WaitError",
    "WorkerInfo",
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
    "workers",
]
