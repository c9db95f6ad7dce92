"""Running workflows from Python: ``run_workflow``, ``get_run`` and ``list_runs``.

Each takes ``app=`` (an app from ``create_app``); without it, the default app is used.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from orchestrator.app import default_services
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.submit import Submission, resolve, submit
from orchestrator.errors import RunNotFound
from orchestrator.records import RunRecord
from orchestrator.status import RunStatus, Trigger


def run_workflow(
    workflow: WorkflowSpec | str | Any,
    inputs: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    tenant_id: str | None = None,
    trigger: Trigger | str = Trigger.API,
    app: Celery | None = None,
) -> RunHandle:
    """Start a run of ``workflow`` (a ``Workflow``, spec, or registered name); returns its handle.

    Two calls with one ``idempotency_key`` start one run; both return its handle.
    """
    services = default_services(app)
    spec = resolve(services, workflow)
    sub = Submission(
        inputs=dict(inputs or {}),
        trigger=Trigger(trigger),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        tenant_id=tenant_id,
    )
    return RunHandle(submit(services, spec, sub), services)


def get_run(run_id: str, *, app: Celery | None = None) -> RunHandle:
    """The handle of an existing run; raises ``RunNotFound`` for an unknown id."""
    services = default_services(app)
    if services.history.get_run(run_id) is None:
        raise RunNotFound(run_id)
    return RunHandle(str(run_id), services)


def list_runs(
    workflow: str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 50,
    *,
    app: Celery | None = None,
) -> list[RunRecord]:
    """Newest runs first, optionally of one workflow and/or status."""
    return default_services(app).history.list_runs(
        workflow, RunStatus(status) if status else None, limit
    )
