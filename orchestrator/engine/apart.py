"""Steps that end without their function being called here: skipped (a false ``when``, a
skipped dependency), a ``for_each`` step fanning out its items, and a step that starts (or, its
child run ended, ends) a child workflow's run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.engine.children import run_child
from orchestrator.engine.conditions import is_skipped, skip_reason
from orchestrator.engine.fanout import fan_out
from orchestrator.engine.finish import skip
from orchestrator.engine.sleeping import run_wait

if TYPE_CHECKING:
    from orchestrator.engine.step import Step


def ended_apart(step: Step, values: dict[str, Any]) -> bool:
    """Whether the claimed step was handled here; ``values``: what its claim read, by field."""
    spec = step.spec_step
    if step.item is None and (spec.conditional or any(map(is_skipped, values.values()))):
        reason = skip_reason(
            step.spec.name, spec, values, lambda: step.rt.state.inputs(step.run_id)
        )
        if reason is not None:
            skip(step, reason)
            return True
    if spec.for_each and step.item is None:
        fan_out(step, values[spec.for_each])
        return True
    if spec.workflow is not None:
        run_child(step, step.arguments((), list(values), tuple(values.values())))
        return True
    if spec.waits:
        run_wait(step, step.arguments((), list(values), tuple(values.values())))
        return True
    return False
