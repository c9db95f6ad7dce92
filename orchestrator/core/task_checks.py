"""Checks of a workflow against the registered tasks, before anything is published: every task
is registered (with "did you mean"), none is a framework task, each step's function can take what
it will receive, and a run's inputs fit its root steps. Tasks are looked up in a
:class:`TaskCatalog`, so this module stays free of Celery.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Protocol

from orchestrator.core.explain import did_you_mean
from orchestrator.core.spec import StepSpec, WorkflowSpec
from orchestrator.errors import InputError, UnknownTaskError


class TaskCatalog(Protocol):
    """Where the registered tasks are looked up: the signature of a task's function, or None;
    and the names of every registered task (for "did you mean")."""

    def signature_of(self, name: str) -> inspect.Signature | None: ...
    def task_names(self) -> list[str]: ...


RESERVED_TASK_PREFIXES = {"celery.": "Celery", "orchestrator.": "orchestrator"}
"""Task names of Celery's own tasks (``celery.chord_unlock``, ...) and of the framework's
(``orchestrator.run_deadline``, beat's fire task, ...): registered, but never a step."""
RESERVED = tuple(RESERVED_TASK_PREFIXES)


def check_tasks(spec: WorkflowSpec, catalog: TaskCatalog) -> None:
    """Every task is registered, and each function can take what its step will receive."""
    for step in spec.steps:
        if step.workflow is not None or step.waits:
            continue  # checked by check_children, check_waits
        _check_not_reserved(spec, step)
        sig = catalog.signature_of(step.task)
        if sig is None:
            mine = [n for n in catalog.task_names() if not n.startswith(RESERVED)]
            raise UnknownTaskError(
                spec.name,
                f"task {step.task!r} is not registered{did_you_mean(step.task, mine)}; decorate "
                "it with @task and list its module in ORCHESTRATOR_TASK_MODULES",
                step.id,
            )
        if step.after:
            _check_bind(spec, step, sig, (object(),), step.kwargs, "its parents' result and kwargs")
    if spec.on_failure is not None and catalog.signature_of(spec.on_failure) is None:
        raise UnknownTaskError(
            spec.name,
            f"on_failure task {spec.on_failure!r} is not registered; decorate it with @task and "
            "list its module in ORCHESTRATOR_TASK_MODULES",
        )


def _check_not_reserved(spec: WorkflowSpec, step: StepSpec) -> None:
    for prefix, owner in RESERVED_TASK_PREFIXES.items():
        if step.task.startswith(prefix):
            raise UnknownTaskError(
                spec.name,
                f"task {step.task!r} is one of {owner}'s own tasks and cannot be a workflow "
                "step; name a task of yours, decorated with @task in a module listed in "
                "ORCHESTRATOR_TASK_MODULES",
                step.id,
            )


def check_inputs(spec: WorkflowSpec, inputs: dict[str, Any], catalog: TaskCatalog) -> None:
    """The inputs are a JSON object that every root step's function accepts."""
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        raise InputError(spec.name, "inputs must be a mapping of names to values")
    try:
        same = json.loads(json.dumps(inputs, allow_nan=False)) == inputs
    except (TypeError, ValueError) as exc:
        raise InputError(
            spec.name, f"inputs are not JSON-serializable ({exc}); pass plain JSON values"
        ) from exc
    if not same:
        raise InputError(
            spec.name,
            "inputs would change on the way to the steps (JSON has no tuples and "
            "only string keys); pass lists and string keys",
        )
    for step in spec.steps:
        sig = catalog.signature_of(step.task)
        if not step.after and sig is not None:
            _check_bind(spec, step, sig, (), {**inputs, **step.kwargs}, "the run's inputs")


def _check_bind(
    spec: WorkflowSpec,
    step: StepSpec,
    sig: inspect.Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    what: str,
) -> None:
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        given = ", ".join(sorted(kwargs)) or "no keyword arguments"
        raise InputError(
            spec.name,
            f"task {step.task}{sig} cannot be called with {what} ({given}): {exc}",
            step.id,
        ) from exc
