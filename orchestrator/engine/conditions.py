"""Whether a step runs: its ``when`` condition and its ``trigger`` over its dependencies.

A skipped step leaves :data:`SKIPPED` as its result, so the joins it triggers are counted and
its dependents (each in a segment of its own, see ``planner.own_segments``) decide in turn:
``all_succeeded`` skips a step when a dependency was skipped, ``none_failed`` runs it when at
least one succeeded (a failed dependency fails the run, so nothing is left to decide then).
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.expressions import ConditionFailed, evaluate
from orchestrator.core.spec import StepSpec
from orchestrator.engine.failure import NotRetryable

SKIPPED: dict[str, str] = {"__orchestrator__": "skipped"}
"""The result a skipped step leaves where its dependents read results."""


class BadCondition(NotRetryable):
    """A step's ``when`` could not be evaluated over the run's values."""


def is_skipped(value: Any) -> bool:
    return isinstance(value, dict) and value == SKIPPED


def skip_reason(workflow: str, step: StepSpec, parents: dict[str, Any], inputs: Any) -> str | None:
    """Why the step is skipped, or None when it runs. ``parents``: dependency results by id;
    ``inputs``: the run's inputs, called only when there is a ``when`` to evaluate."""
    skipped = [p for p, v in parents.items() if is_skipped(v)]
    if skipped and step.trigger == "all_succeeded":
        return f"dependency {skipped[0]!r} was skipped"
    if parents and len(skipped) == len(parents):
        return "every dependency was skipped"
    if step.when is None:
        return None
    values = {**{p: None if is_skipped(v) else v for p, v in parents.items()}}
    values["inputs"] = inputs()
    try:
        if evaluate(step.when, values):
            return None
    except ConditionFailed as exc:
        raise BadCondition(
            f"workflow {workflow!r}, step {step.id!r}: `when` {step.when!r} could not be "
            f"evaluated: {exc}"
        ) from exc
    return f"`when` {step.when!r} is false"
