"""Checks of the run-time shapes before anything is published: each ``for_each`` names a
dependency, each ``when`` parses as CEL over known names, each child workflow is registered,
and no workflow starts itself through its children (a cycle would never end)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.core.expressions import check_condition
from orchestrator.errors import ShapeError

if TYPE_CHECKING:
    from orchestrator.core.spec import WorkflowSpec


def check_run_time_shapes(spec: WorkflowSpec) -> None:
    """Each ``for_each`` names a step that is a dependency; each ``when`` parses and names only
    ``inputs`` and the step's dependencies."""
    ids = {s.id for s in spec.steps}
    for step in spec.steps:
        if step.for_each is not None and step.for_each not in ids:
            raise ShapeError(
                spec.name,
                f"for_each names {step.for_each!r}, which is not a step of this workflow",
                step.id,
            )
        if step.for_each is not None and step.for_each not in step.after:
            raise ShapeError(
                spec.name,
                f"for_each names {step.for_each!r}, which is not among its dependencies "
                f"({', '.join(step.after)}); add it to `after` or leave `after` out",
                step.id,
            )
        if step.when is not None:
            check_condition(spec.name, step.id, step.when, ("inputs", *step.after))


def check_children(spec: WorkflowSpec, lookup: Callable[[str], WorkflowSpec | None]) -> None:
    """Walk the workflows ``spec`` starts, and theirs; ``lookup``: a registered spec or None."""
    done: set[str] = set()

    def visit(current: WorkflowSpec, path: list[str]) -> None:
        for step in current.steps:
            if step.workflow is None:
                continue
            if step.workflow in path:
                cycle = " -> ".join([*path[path.index(step.workflow) :], step.workflow])
                raise ShapeError(
                    current.name,
                    f"runs workflow {step.workflow!r}, which starts it again: {cycle}",
                    step.id,
                )
            if step.workflow in done:
                continue
            child = lookup(step.workflow)
            if child is None:
                raise ShapeError(
                    current.name,
                    f"runs workflow {step.workflow!r}, which is not registered (define it in "
                    "Python or in a YAML file under ORCHESTRATOR_WORKFLOWS_PATH)",
                    step.id,
                )
            visit(child, [*path, child.name])
            done.add(child.name)

    visit(spec, [spec.name])
