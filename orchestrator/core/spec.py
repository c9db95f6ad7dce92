"""The workflow model (``WorkflowSpec``) and every check that runs before anything is published.

Python (``Workflow``/``step()``) and YAML both build this one pydantic model. Structural checks
(empty, duplicate ids, unknown dependencies, cycles, schedule) run when the model is built; checks
that need the registered tasks (unknown task, what a step's function can accept, inputs) are in
``core.task_checks``.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticError

from orchestrator.core.concurrency import ConcurrencySpec, check_concurrency
from orchestrator.core.cron import Cron
from orchestrator.core.explain import pydantic_problem
from orchestrator.core.priorities import check_priority
from orchestrator.core.rate_limits import RateLimitSpec, check_rate_limits
from orchestrator.core.shape_checks import check_run_time_shapes
from orchestrator.core.wait_checks import WAIT_TASK, check_waits
from orchestrator.errors import (
    CycleError,
    DuplicateStepError,
    EmptyWorkflowError,
    ScheduleError,
    UnknownDependencyError,
    ValidationError,
)


class RetrySpec(BaseModel):
    """A step's overrides of its task's ``@retry`` policy (see ``orchestrator.retry``).

    Only the fields a step names override the task's policy; a field left out stays ``None``
    (also after the spec's JSON round trip through PostgreSQL) and keeps the task's value, or
    the default of ``RetryPolicy`` when the task has no ``@retry``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(None, ge=1)
    base_delay: float | None = Field(None, ge=0)
    backoff: float | None = Field(None, ge=1)
    max_delay: float | None = Field(None, ge=0)
    jitter: bool | None = None
    on: tuple[str, ...] | None = None
    """Exception class names that are retried; unset or empty keeps the task's."""

    def overrides(self) -> dict[str, Any]:
        """The fields this step names, for ``RetryPolicy.merged``."""
        return self.model_dump(exclude_none=True)


CHILD_TASK = "orchestrator.child_workflow"
"""The framework's task that starts (and ends) a step's child workflow run."""


class StepSpec(BaseModel):
    """One step: a task, the steps it runs after, and per-step options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    task: str = Field(min_length=1)
    """The task's registered name; a child workflow's step runs :data:`CHILD_TASK`."""
    after: tuple[str, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    retry: RetrySpec | None = None
    timeout: float | None = Field(None, gt=0)
    soft_timeout: float | None = Field(None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)
    """Any other Celery task option (priority, routing_key, ...)."""
    when: str | None = None
    """A CEL condition over ``inputs`` and the dependencies' results: false skips the step."""
    trigger: Literal["all_succeeded", "none_failed"] = "all_succeeded"
    """When dependencies were skipped: skip (``all_succeeded``), or run if one succeeded."""
    for_each: str | None = None
    """A dependency whose list result the step maps over: one call per item."""
    max_items: int | None = Field(None, ge=0, strict=True)
    """Most items a ``for_each`` may map over (default ``ORCHESTRATOR_MAX_ITEMS``); an integer
    (not a bool or a string), on a step with ``for_each`` only."""
    workflow: str | None = None
    """A registered workflow the step runs as a child run (per item with ``for_each``)."""
    rate_limit: RateLimitSpec | None = None
    """At most ``limit`` starts per ``period`` seconds per key, across every worker
    (``orchestrator.core.rate_limits``); a start over it is deferred, not an attempt."""
    sleep: float | None = None
    """Seconds the step waits (holding no worker slot) before it succeeds (``wf.sleep``)."""
    wait_for: str | None = None
    """A signal the step waits for; its payload is the step's result (``wf.wait_for``); the
    step's ``timeout`` is then how long it waits."""
    on_timeout: str | None = None
    """What a ``wait_for`` past its ``timeout`` does: ``fail`` (the default) or ``skip``."""
    priority: int | None = None
    """0 (lowest) .. 9: orders the step's messages among those waiting in its queue; wins
    over the run's priority (``orchestrator.core.priorities``)."""
    queue_timeout: float | None = Field(None, gt=0)
    """Seconds the step may wait in its queue once ready before it fails with
    ``QueueTimeout`` (``orchestrator.ops.queue_timeouts``)."""

    @property
    def waits(self) -> bool:
        """Whether the step is a ``sleep`` or ``wait_for`` step (:data:`WAIT_TASK`)."""
        return self.sleep is not None or self.wait_for is not None

    @property
    def result_later(self) -> bool:
        """Whether the step's result comes after its message: a ``for_each`` (its last item),
        a child workflow (its child run), a ``sleep`` or ``wait_for`` (its wake-up)."""
        return self.for_each is not None or self.workflow is not None or self.waits

    @property
    def conditional(self) -> bool:
        """Whether the step decides at run time if it runs (``when`` or a ``trigger``)."""
        return self.when is not None or self.trigger != "all_succeeded"

    @model_validator(mode="before")
    @classmethod
    def _priority_option(cls, data: Any) -> Any:
        """Celery's ``priority`` option given among ``options`` is the step's priority (on the
        same 0..9 scale, so that it means the same on Redis and RabbitMQ)."""
        options = data.get("options") if isinstance(data, dict) else None
        if isinstance(options, dict) and "priority" in options:
            rest = {k: v for k, v in options.items() if k != "priority"}
            if data.get("priority") is None:
                data = {**data, "priority": options["priority"]}
            data = {**data, "options": rest}
        return data

    @field_validator("after", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _for_each_implies_after(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("for_each") and not data.get("after"):
            data = {**data, "after": (data["for_each"],)}
        if isinstance(data, dict) and data.get("workflow") and not data.get("task"):
            data = {**data, "task": CHILD_TASK}
        waits = isinstance(data, dict) and ("sleep" in data or "wait_for" in data)
        if waits and not data.get("task"):
            data = {**data, "task": WAIT_TASK}
        return data

    @model_validator(mode="after")
    def _max_items_needs_for_each(self) -> StepSpec:
        if self.max_items is not None and self.for_each is None:
            raise ValueError("max_items caps a for_each: give the step for_each, or drop max_items")
        return self


class ScheduleSpec(BaseModel):
    """When beat starts runs: a cron expression or a fixed interval, with the runs' inputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = None
    every: float | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "allow"] = "skip"
    catchup: Literal["latest", "all", "none"] = "latest"
    """Fire times missed while beat was down: one run for the latest (the default, as before
    this option existed), one per missed time (capped), or none (``ops.catchup``)."""


class WorkflowSpec(BaseModel):
    """A validated workflow: a named DAG of steps, optionally with a schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    description: str = ""
    schedule: ScheduleSpec | None = None
    deadline: float | None = Field(None, gt=0)
    on_failure: str | None = None
    """A task called once when a run fails, with ``{run_id, workflow, step, error}``."""
    concurrency: ConcurrencySpec | None = None
    """At most ``max_runs`` runs at once per value of a CEL ``key`` (``core.concurrency``)."""
    steps: tuple[StepSpec, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _schedule_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("schedule"), str):
            data = {**data, "schedule": {"cron": data["schedule"]}}
        return data

    @model_validator(mode="after")
    def _check_structure(self) -> WorkflowSpec:
        check_structure(self)
        return self

    def step(self, step_id: str) -> StepSpec:
        """The step with this id."""
        return self._by_id[step_id]

    @cached_property
    def _by_id(self) -> dict[str, StepSpec]:
        return {s.id: s for s in self.steps}

    @property
    def roots(self) -> list[str]:
        """Steps with no dependency, in declaration order."""
        return [s.id for s in self.steps if not s.after]

    @cached_property
    def sinks(self) -> list[str]:
        """Steps nothing depends on, in declaration order."""
        used = {dep for s in self.steps for dep in s.after}
        return [s.id for s in self.steps if s.id not in used]

    @cached_property
    def version(self) -> str:
        """A hash of everything that affects execution; equal specs share it."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:16]


# -- structural checks ------------------------------------------------------------------------


def check_structure(spec: WorkflowSpec) -> None:
    """Empty workflow, duplicate ids, unknown dependencies, cycles and the schedule."""
    if not spec.steps:
        raise EmptyWorkflowError(spec.name, "has no steps; add at least one with .step() or steps:")
    seen: set[str] = set()
    for step in spec.steps:
        if step.id in seen:
            raise DuplicateStepError(
                spec.name, "is defined twice; give each step its own id", step.id
            )
        seen.add(step.id)
    check_run_time_shapes(spec)
    check_rate_limits(spec)
    check_step_priorities(spec)
    check_waits(spec)
    for step in spec.steps:
        for dep in step.after:
            if dep not in seen:
                raise UnknownDependencyError(
                    spec.name, f"runs after {dep!r}, which is not a step of this workflow", step.id
                )
    cycle = find_cycle({s.id: list(s.after) for s in spec.steps})
    if cycle:
        raise CycleError(spec.name, cycle)
    if spec.schedule is not None:
        check_schedule(spec.name, spec.schedule)
    if spec.concurrency is not None:
        check_concurrency(spec.name, spec.concurrency)


def check_step_priorities(spec: WorkflowSpec) -> None:
    """Each step's ``priority`` is 0..9 (``PriorityError`` naming the workflow and step)."""
    for step in spec.steps:
        check_priority(step.priority, spec.name, step.id)


def find_cycle(parents: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the dependency graph as a list of step ids in dependency order, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in parents:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            deps = parents[node]
            if index < len(deps):
                stack.append((node, index + 1))
                dep = deps[index]
                if state.get(dep) == 1:
                    return _rotate(list(reversed(path[path.index(dep) :])), list(parents))
                if not state.get(dep):
                    stack.append((dep, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def _rotate(cycle: list[str], declared: list[str]) -> list[str]:
    """The cycle starting from its first-declared step, for a stable, readable message."""
    start = min(range(len(cycle)), key=lambda i: declared.index(cycle[i]))
    return cycle[start:] + cycle[:start]


def check_schedule(workflow: str, schedule: ScheduleSpec) -> None:
    """A schedule has exactly one of cron and every, and each parses."""
    if (schedule.cron is None) == (schedule.every is None):
        raise ScheduleError(workflow, "schedule needs exactly one of `cron` and `every`")
    if schedule.every is not None and schedule.every <= 0:
        raise ScheduleError(workflow, f"schedule every={schedule.every} must be > 0 seconds")
    if schedule.cron is not None:
        check_cron(workflow, schedule.cron)


def check_cron(workflow: str, expr: str) -> None:
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""
    Cron.parse(expr, workflow)


KEYS = {
    "workflow": tuple(WorkflowSpec.model_fields),
    "step": tuple(StepSpec.model_fields),
    "retry": tuple(RetrySpec.model_fields),
    "schedule": tuple(ScheduleSpec.model_fields),
    "rate_limit": tuple(RateLimitSpec.model_fields),
    "concurrency": tuple(ConcurrencySpec.model_fields),
}


def parse_spec(data: Any, source: str = "<python>") -> WorkflowSpec:
    """Build a spec from plain data (a parsed YAML document), naming ``source`` on errors:
    the step, what is wrong, and for an unknown key the closest known one."""
    if not isinstance(data, dict):
        raise ValidationError(source, "a workflow document must be a mapping with name and steps")
    try:
        return WorkflowSpec.model_validate(data)
    except PydanticError as exc:
        name = str(data.get("name") or source)
        errors = exc.errors(include_url=False)
        step, problem = pydantic_problem(errors[0], data, KEYS)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationError(name, f"{problem}{more}; in {source}", step) from exc
