"""Running workflows from Python: ``run_workflow``, ``get_run`` and ``list_runs``.

Each takes ``app=`` (an app from ``create_app``); without it, the default app is used. A run is
found by its id or, as git finds commits, by a prefix of it that no other run shares.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from orchestrator.app import default_services
from orchestrator.core.priorities import check_priority
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.submit import Submission, resolve, submit
from orchestrator.errors import OrchestratorError, RunNotFound
from orchestrator.ops.workers import list_workers
from orchestrator.ports import RunHistory
from orchestrator.records import RunQuery, RunRecord, WorkerInfo
from orchestrator.status import RunStatus, Trigger

PREFIX_CANDIDATES = 10  # an ambiguous run id prefix lists at most this many runs


def run_workflow(
    workflow: WorkflowSpec | str | Any,
    inputs: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    tenant_id: str | None = None,
    priority: int | None = None,
    trigger: Trigger | str = Trigger.API,
    app: Celery | None = None,
) -> RunHandle:
    """Start a run of ``workflow`` (a ``Workflow``, spec, or registered name); returns its handle.

    Two calls with one ``idempotency_key`` start one run; both return its handle.
    ``priority``: 0 (lowest, the default) .. 9: its steps' messages go ahead of lower ones
    waiting in the same queue (a step's own ``priority`` wins); another value raises
    ``PriorityError``.
    """
    services = default_services(app)
    spec = resolve(services, workflow)
    check_priority(priority, spec.name)
    sub = Submission(
        inputs=dict(inputs or {}),
        trigger=Trigger(trigger),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        tenant_id=tenant_id,
        priority=priority,
    )
    return RunHandle(submit(services, spec, sub), services)


def get_run(run_id: str, *, app: Celery | None = None) -> RunHandle:
    """The handle of an existing run, by its id or a unique prefix of it; raises
    ``RunNotFound`` for an unknown id, ``OrchestratorError`` for a prefix several runs share."""
    services = default_services(app)
    return RunHandle(find_run_id(services.history, run_id), services)


def find_run_id(history: RunHistory, given: str) -> str:
    """The id of the run whose id is ``given`` or starts with it (hyphens optional)."""
    found = history.get_run(given)
    if found is not None:
        return found.id
    digits = given.strip().replace("-", "").lower()
    shared = [
        r
        for r in history.find_runs(RunQuery(search=given.strip()), limit=PREFIX_CANDIDATES + 1)
        if digits and r.id.replace("-", "").startswith(digits)
    ]
    if not shared:
        raise RunNotFound(given)
    if len(shared) > 1:
        shown = "; ".join(f"{r.id} ({r.workflow}, {r.status})" for r in shared[:PREFIX_CANDIDATES])
        more = " and more" if len(shared) > PREFIX_CANDIDATES else ""
        raise OrchestratorError(
            f"run id prefix {given!r} is ambiguous: {shown}{more}; give more characters"
        )
    return shared[0].id


def list_runs(
    workflow: str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 50,
    *,
    app: Celery | None = None,
) -> list[RunRecord]:
    """Newest runs first, optionally of one workflow and/or status (with the end of each run
    whose ``wait()`` in this process returned)."""
    services = default_services(app)
    services.ends_ahead.settle()
    return services.history.list_runs(workflow, RunStatus(status) if status else None, limit)


def workers(*, app: Celery | None = None) -> list[WorkerInfo]:
    """The workers heard from lately, by name: their host, pid, queues, concurrency, the steps
    they run (``running``: run id and step id) and their last heartbeat. A worker silent for
    more than ``LOST_AFTER`` seconds (15: three missed heartbeats) is listed with
    ``state == "lost"``; after ``DROPPED_AFTER`` (10 minutes) it is no longer listed."""
    return list_workers(default_services(app))
