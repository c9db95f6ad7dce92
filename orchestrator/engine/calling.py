"""Calling a step's function: its signature (checked before the call), its retry policy (the
task's ``@retry`` with the step's overrides), and the circuit breaker around the call."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from orchestrator.core.backoff import RetryPolicy
from orchestrator.core.breaker import BreakerConfig
from orchestrator.core.spec import StepSpec
from orchestrator.ports import BreakerStore

if TYPE_CHECKING:
    from orchestrator.engine.task import StepTask


def effective_policy(task: StepTask, step: StepSpec) -> RetryPolicy | None:
    """The task's ``@retry`` policy with the step's ``retry`` overrides."""
    if step.retry is None:
        return task.retry_policy
    base = task.retry_policy or RetryPolicy()
    return base.merged(**step.retry.model_dump())


def signature_of(task: StepTask) -> inspect.Signature:
    """The task function's signature, computed once per task."""
    found: inspect.Signature | None = task.__dict__.get("_orchestrator_signature")
    if found is None:
        found = inspect.signature(task.run)
        task.__dict__["_orchestrator_signature"] = found
    return found


def guarded(store: BreakerStore, cfg: BreakerConfig, trial: bool, call: Any) -> Any:
    """Call ``call`` and report its outcome to the breaker ``cfg``."""
    try:
        result = call()
    except Exception as exc:
        store.report(cfg, ok=not cfg.counts(exc), trial=trial)
        raise
    store.report(cfg, ok=True, trial=trial)
    return result
