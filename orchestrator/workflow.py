"""The Python way to define workflows: ``Workflow`` and ``Step``."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError

from orchestrator.client import run_workflow
from orchestrator.core import registry
from orchestrator.core.concurrency import ConcurrencySpec
from orchestrator.core.explain import VALUE_HINTS
from orchestrator.core.priorities import check_priority
from orchestrator.core.rate_limits import RateLimitSpec
from orchestrator.core.spec import RetrySpec, ScheduleSpec, StepSpec, WorkflowSpec
from orchestrator.engine.handle import RunHandle
from orchestrator.errors import ValidationError, WaitError


def task_name(task: Any) -> str:
    """A task's registered name, from the task object or the name itself."""
    if isinstance(task, str):
        return task
    name = getattr(task, "name", None)
    if not isinstance(name, str):
        raise TypeError(f"{task!r} is not a task: decorate it with @orchestrator.task")
    return name


def Step(  # noqa: N802 - reads as a type where it is used: Workflow(steps=[Step(...)])
    id: str,
    task: Any = None,
    after: str | list[str] | tuple[str, ...] | None = None,
    *,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    retry: RetrySpec | dict[str, Any] | None = None,
    timeout: float | None = None,
    soft_timeout: float | None = None,
    when: str | None = None,
    trigger: str = "all_succeeded",
    for_each: str | None = None,
    max_items: int | None = None,
    workflow: Any = None,
    sleep: float | None = None,
    wait_for: str | None = None,
    on_timeout: str | None = None,
    rate_limit: RateLimitSpec | dict[str, Any] | None = None,
    priority: int | None = None,
    queue_timeout: float | None = None,
    **options: Any,
) -> StepSpec:
    """A step: ``task`` (a task object or its registered name) run after the ``after`` steps;
    ``when``: a CEL condition over ``inputs`` and the dependencies' results (false skips the
    step); ``trigger``: ``all_succeeded`` or ``none_failed`` (see design.md, Conditions);
    ``for_each``: a dependency whose list result the step maps over, one call per item (at
    most ``max_items``); ``workflow``: a registered workflow (or its name) to run as a child run
    instead of a task, once or per item, with the dependency's result or the item as inputs;
    ``rate_limit``: ``{"key": "openai", "limit": 60, "period": 60.0}`` (or ``key_expr``, a CEL
    expression over ``inputs``), at most ``limit`` starts per ``period`` seconds per key;
    ``priority``: 0 (lowest) .. 9, orders the step's waiting messages (wins over the run's);
    ``queue_timeout``: seconds the step may wait in its queue once ready, else it fails with
    ``QueueTimeout``."""
    # sleep and wait_for steps: ``sleep`` seconds, or the signal ``wait_for`` names (payload
    # is the step's result) for at most ``timeout`` seconds, then ``on_timeout`` (fail|skip)
    waiting = {
        key: value
        for key, value in (("sleep", sleep), ("wait_for", wait_for), ("on_timeout", on_timeout))
        if value is not None
    }
    step: StepSpec = _validated(
        StepSpec,
        f"step {id!r}",
        {
            "id": id,
            "task": "" if task is None else task_name(task),
            "after": after,
            "kwargs": kwargs or {},
            "queue": queue,
            "retry": retry,
            "timeout": timeout,
            "soft_timeout": soft_timeout,
            "when": when,
            "trigger": trigger,
            "for_each": for_each,
            "max_items": max_items,
            "workflow": getattr(workflow, "name", workflow),
            "rate_limit": rate_limit,
            "priority": priority,
            "queue_timeout": queue_timeout,
            "options": options,
            **waiting,
        },
    )
    return step


def _validated(model: Any, what: str, data: dict[str, Any], workflow: str = "") -> Any:
    """``model.model_validate(data)``, with pydantic's errors as our ``ValidationError``."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}{_hint(e)}"
            for e in exc.errors()
        )
        raise ValidationError(workflow or "<python>", f"invalid {what}: {problems}") from exc


def _hint(error: Any) -> str:
    """What to write instead of a value of another tool's form (``core.explain.VALUE_HINTS``)."""
    loc = error.get("loc") or ("",)
    return VALUE_HINTS.get(str(loc[0]), "") if isinstance(error.get("input"), str) else ""


class Workflow:
    """A workflow defined in Python; registered by name so ``run_workflow(name)`` finds it."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        schedule: str | ScheduleSpec | dict[str, Any] | None = None,
        deadline: float | None = None,
        on_failure: Any = None,
        steps: list[StepSpec] | None = None,
        concurrency: ConcurrencySpec | dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.concurrency = concurrency  # {"max_runs", "key", "on_limit"}: core.concurrency
        self.on_failure = None if on_failure is None else task_name(on_failure)
        self.description = description
        self.schedule = schedule
        self.deadline = deadline
        self._steps: list[StepSpec] = list(steps or [])
        registry.add_builder(name, self)  # so beat and run_workflow(name) find it

    def step(
        self, id: str, task: Any = None, after: str | list[str] | None = None, **options: Any
    ) -> Workflow:
        """Add a step (see :func:`Step` for the options); returns the workflow for chaining."""
        check_priority(options.get("priority"), self.name, id)
        try:
            self._steps.append(Step(id, task, after, **options))
        except ValidationError as exc:
            raise ValidationError(self.name, str(exc).split(": ", 1)[1], step=id) from exc
        return self

    def sleep(
        self, id: str, seconds: float, after: str | list[str] | None = None, **options: Any
    ) -> Workflow:
        """Add a step that waits ``seconds`` (no worker slot held), then succeeds with its
        dependency's result (``None`` for a root step, a dict for several dependencies)."""
        return self.step(id, None, after, sleep=seconds, **options)

    def wait_for(
        self,
        id: str,
        signal: str,
        after: str | list[str] | None = None,
        *,
        timeout: float | None = None,
        on_timeout: str | None = None,
        **options: Any,
    ) -> Workflow:
        """Add a step that waits for ``signal`` (``run.signal(name, payload)``; a signal sent
        before the step is reached counts) and succeeds with its payload; past ``timeout``
        seconds it fails, or is skipped with ``on_timeout="skip"``."""
        if not isinstance(signal, str) or not signal.strip():
            raise WaitError(
                self.name,
                'wait_for has no signal name; name the signal, e.g. signal="approved"',
                id,
            )
        options.update(wait_for=signal, timeout=timeout, on_timeout=on_timeout)
        return self.step(id, None, after, **options)

    @property
    def spec(self) -> WorkflowSpec:
        """The validated spec; raises the first validation error, naming workflow and step."""
        schedule = {"cron": self.schedule} if isinstance(self.schedule, str) else self.schedule
        data = {
            "name": self.name,
            "description": self.description,
            "schedule": schedule,
            "deadline": self.deadline,
            "on_failure": self.on_failure,
            "concurrency": self.concurrency,
            "steps": self._steps,
        }
        spec = _validated(WorkflowSpec, "workflow definition", data, self.name)
        return registry.register(spec)

    def run(self, inputs: dict[str, Any] | None = None, **options: Any) -> RunHandle:
        """The same as ``run_workflow(self, inputs, ...)``."""
        return run_workflow(self, inputs, **options)

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r} ({len(self._steps)} steps)>"
