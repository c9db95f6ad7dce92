"""Every error the framework raises, in one tree.

OrchestratorError
├── ValidationError                 a workflow spec or its inputs are wrong; nothing was published
│   ├── EmptyWorkflowError
│   ├── DuplicateStepError
│   ├── UnknownTaskError
│   ├── UnknownDependencyError
│   ├── CycleError
│   ├── ScheduleError
│   ├── ConditionError              a step's `when` does not parse or names an unknown value
│   ├── ShapeError                  a `for_each` or child `workflow` that cannot run
│   ├── RateLimitError              a step's `rate_limit` that cannot count (limit, period, key)
│   ├── PriorityError               a run's or step's `priority` outside 0..9
│   ├── ConcurrencyError            a workflow's `concurrency` (max_runs, on_limit, key) is wrong
│   └── InputError
│       └── ConcurrencyKeyError     the run's inputs give its concurrency key no value
├── WorkflowNotFound                no workflow is registered under that name
├── RunNotFound                     no run has that id
├── WorkflowFailed                  a run ended failed or cancelled (raised by ``RunHandle.wait``)
├── CircuitOpenError                a breaker is open and the function was called directly
├── InvalidTransition               a control action does not apply to the run's status
├── QueueTimeout                    a step was not started within its `queue_timeout`
├── NotScheduled                    pause, resume or backfill of a workflow without a schedule
├── BackfillError                   a backfill range that is empty, reversed or too large
├── ContextError                    a run context value that is not JSON, or a context too large
└── ServiceUnavailable              the broker, Redis or PostgreSQL cannot be reached
"""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of every error raised by orchestrator."""


class ValidationError(OrchestratorError):
    """A workflow spec or its inputs are invalid; nothing was written or published."""

    def __init__(self, workflow: str, message: str, step: str | None = None) -> None:
        self.workflow = workflow
        self.step = step
        where = f"workflow {workflow!r}" + (f", step {step!r}" if step else "")
        super().__init__(f"{where}: {message}")


class EmptyWorkflowError(ValidationError):
    """The workflow has no steps."""


class DuplicateStepError(ValidationError):
    """Two steps share one id."""


class UnknownTaskError(ValidationError):
    """A step names a task that no imported module registered."""


class UnknownDependencyError(ValidationError):
    """A step depends on a step id that the workflow does not have."""


class ConditionError(ValidationError):
    """A step's ``when`` does not parse as CEL, or names a value the step does not have."""


class ShapeError(ValidationError):
    """A ``for_each`` or a child ``workflow`` that cannot run (unknown, not a dependency,
    not registered, a cycle through child workflows)."""


class WaitError(ValidationError):
    """A ``sleep`` or ``wait_for`` step that cannot wait: no signal name, a sleep that is not
    a positive number of seconds, an ``on_timeout`` other than ``fail`` or ``skip``, or wait
    options on a step that runs a task."""


class RateLimitError(ValidationError):
    """A step's ``rate_limit`` that cannot count: ``limit`` below 1, ``period`` not positive,
    an empty ``key``, both or neither of ``key`` and ``key_expr``, or a ``key_expr`` that does
    not parse as CEL over ``inputs``."""


class PriorityError(ValidationError):
    """A run's or step's ``priority`` that is not a whole number from 0 (lowest) to 9."""


class CycleError(ValidationError):
    """The steps' dependencies form a cycle."""

    def __init__(self, workflow: str, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " -> ".join([*cycle, cycle[0]])
        super().__init__(
            workflow,
            f"dependency cycle {path} (each step waits for the one before it); "
            "remove one of these `after` entries",
            step=cycle[0],
        )


class ScheduleError(ValidationError):
    """The workflow's schedule cannot be parsed."""


class InputError(ValidationError):
    """The run's inputs do not fit the workflow's root steps, or are not JSON."""


class ConcurrencyError(ValidationError):
    """A workflow's ``concurrency``: ``max_runs`` below 1, an ``on_limit`` other than
    ``queue``, ``cancel_newest`` or ``cancel_oldest``, or a ``key`` that does not parse as CEL
    over ``inputs``."""


class ConcurrencyKeyError(InputError):
    """A run's concurrency key cannot be evaluated over its inputs (a missing field), or gives
    something other than a string or a number; the run is not written."""


class WorkflowNotFound(OrchestratorError):
    """No workflow is registered under that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        hint = ", ".join(sorted(known)) or "none"
        super().__init__(
            f"workflow {name!r} is not registered (known: {hint}); define it in Python or put its "
            "YAML under ORCHESTRATOR_WORKFLOWS_PATH"
        )


class RunNotFound(OrchestratorError):
    """No run has that id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} does not exist; `orchestrator runs` lists the known runs")


class WorkflowFailed(OrchestratorError):
    """A run ended failed or cancelled."""

    def __init__(
        self, run_id: str, workflow: str, status: str, step: str | None, error: str | None
    ):
        self.run_id = run_id
        self.workflow = workflow
        self.status = status
        self.step = step
        self.error = error
        where = f" at step {step!r}" if step else ""
        super().__init__(
            f"run {run_id} of workflow {workflow!r} {status}{where}: "
            f"{error or 'no error recorded'}; "
            f"`orchestrator show {run_id}` has the details"
        )


class CircuitOpenError(OrchestratorError):
    """A circuit breaker is open, so the protected function was not called."""

    def __init__(self, breaker: str, retry_in: float) -> None:
        self.breaker = breaker
        self.retry_in = retry_in
        super().__init__(
            f"circuit breaker {breaker!r} is open; "
            f"the next trial call is allowed in {retry_in:.1f}s"
        )


class InvalidTransition(OrchestratorError):
    """A control action does not apply to the run in its current status."""


class QueueTimeout(OrchestratorError):
    """A step was not started within its ``queue_timeout`` of becoming ready: it failed for
    good, and its run with it (recorded as the step's error; ``RunHandle.wait`` raises
    ``WorkflowFailed`` naming it)."""

    def __init__(
        self, workflow: str, step: str, queue: str, waited: float, timeout: float, why: str
    ) -> None:
        self.workflow = workflow
        self.step = step
        self.queue = queue
        self.waited = waited
        super().__init__(
            f"workflow {workflow!r}, step {step!r}: not started within its queue_timeout of "
            f"{timeout:g}s (waited {waited:.1f}s on queue {queue!r}): {why}"
        )


class NotScheduled(OrchestratorError):
    """Pause, resume or backfill of a workflow that has no ``schedule``."""

    def __init__(self, workflow: str, action: str) -> None:
        self.workflow = workflow
        super().__init__(
            f"workflow {workflow!r} has no schedule, so there is nothing to {action}; add "
            "`schedule:` (cron or every) to it first"
        )


class BackfillError(OrchestratorError):
    """A backfill that would start nothing sensible: a reversed range or too many fire times.
    Nothing was started."""

    def __init__(self, workflow: str, message: str) -> None:
        self.workflow = workflow
        super().__init__(f"backfill of {workflow!r}: {message}; nothing was started")


class SignalError(OrchestratorError):
    """A signal that cannot be sent: no name, or a payload that is not JSON data."""


class ContextError(OrchestratorError):
    """A run context key or value that cannot be kept: a key that is not a non-empty string, a
    value that is not JSON data, or a context that would grow past its bound."""


class ServiceUnavailable(OrchestratorError):
    """The broker, Redis or PostgreSQL cannot be reached."""

    def __init__(self, service: str, url: str, detail: str, fix: str) -> None:
        self.service = service
        self.url = url
        super().__init__(f"cannot reach {service} at {url}: {detail.rstrip('. ')}. {fix}")
