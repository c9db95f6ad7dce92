"""The console's pages: each calls the ``/api/v1`` function that serves the same data or action
(``orchestrator.web.api``) and renders what it returns; a form's action answers with a redirect
to what it changed (post/redirect/get)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import RedirectResponse, Response

from orchestrator.errors import ValidationError
from orchestrator.web import api
from orchestrator.web.auth import csrf_checked
from orchestrator.web.catalog import workflow_svg
from orchestrator.web.charts import durations_svg, failures_svg, runs_svg
from orchestrator.web.console import console_of
from orchestrator.web.filters import BadInput, RunFilters
from orchestrator.web.live import run_views
from orchestrator.web.render import page

router = APIRouter(include_in_schema=False)
changes = [Depends(csrf_checked)]


def see(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


@router.get("/")
def home() -> Response:
    return see("/runs")


@router.get("/runs")
def runs(request: Request, filters: Annotated[RunFilters, Depends()]) -> Response:
    found = api.list_runs(request, filters)
    asked = filters.asked()
    shown = {k: v for k, v in {**asked, "limit": filters.limit}.items() if v}
    return page(request, "runs.html", "runs", listing=found, asked=asked, shown=shown)


@router.get("/runs/{run_id}")
def run(request: Request, run_id: str) -> Response:
    found = api.get_run(request, run_id)
    return page(request, "run.html", "runs", **run_views(found))


@router.post("/runs/{run_id}/{action}", dependencies=changes)
def control(
    request: Request, run_id: str, action: str, name: str = Form(""), payload: str = Form("")
) -> Response:
    signal = None
    if action == "signal":  # the run page's signal form: a name and a JSON payload
        try:
            signal = api.SignalBody(name=name, payload=json.loads(payload or "null"))
        except ValueError as exc:
            raise BadInput(f"the signal's payload is not JSON ({exc})") from exc
    done = api.control_run(request, run_id, action, signal)
    return see(f"/runs/{done.new_run_id or run_id}")


@router.get("/workflows")
def workflows(request: Request) -> Response:
    return page(request, "workflows.html", "workflows", workflows=api.list_workflows(request))


@router.get("/workflows/{name}")
def workflow(request: Request, name: str) -> Response:
    return _workflow_page(request, name)


def _workflow_page(
    request: Request, name: str, form: dict[str, str] | None = None, error: str = ""
) -> Response:
    found = api.get_workflow(request, name)
    spec = console_of(request).catalog.spec(name)
    defaults = (
        found.schedule.inputs if found.schedule else {i.name: i.default for i in found.inputs}
    )
    form = form or {"inputs": json.dumps(defaults, indent=2, default=str)}
    return page(
        request,
        "workflow.html",
        "workflows",
        status=400 if error else 200,
        workflow=found,
        dag=workflow_svg(spec),
        form=form,
        error=error,
    )


@router.post("/workflows/{name}/start", dependencies=changes)
def start(
    request: Request,
    name: str,
    inputs: str = Form(""),
    idempotency_key: str = Form(""),
    correlation_id: str = Form(""),
) -> Response:
    """Start a run from the form; wrong inputs show on the form (400), nothing is started."""
    form = {"inputs": inputs, "idempotency_key": idempotency_key, "correlation_id": correlation_id}
    try:
        values = json.loads(inputs or "{}")
        if not isinstance(values, dict):
            raise ValueError('inputs must be a JSON object such as {"source": "s3://b/day"}')
        body = api.StartRun(
            inputs=values,
            idempotency_key=idempotency_key or None,
            correlation_id=correlation_id or None,
        )
        done = api.start_run(request, name, body)
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        return _workflow_page(request, name, form, f"not started: {exc}")
    return see(f"/runs/{done.run_id}")


@router.get("/schedules")
def schedules(request: Request) -> Response:
    return page(request, "schedules.html", "schedules", schedules=api.list_schedules(request))


@router.get("/dead-letters")
def dead_letters(request: Request, all: bool = False, limit: str | None = None) -> Response:
    letters = api.list_dead_letters(request, all, limit)
    return page(request, "dead_letters.html", "dead-letters", letters=letters, all=all)


@router.post("/dead-letters/{letter_id}/replay", dependencies=changes)
def replay(request: Request, letter_id: int) -> Response:
    done = api.replay_dead_letter(request, letter_id)
    return see(f"/runs/{done.new_run_id}" if done.new_run_id else "/dead-letters")


@router.get("/breakers")
def breakers(request: Request) -> Response:
    return page(request, "breakers.html", "breakers", breakers=api.list_breakers(request))


@router.get("/workers")
def workers(request: Request) -> Response:
    return page(request, "workers.html", "workers", found=api.list_workers(request))


@router.get("/charts")
def charts(request: Request, hours: str | None = None) -> Response:
    data = api.get_charts(request, hours)
    svgs = [runs_svg(data), failures_svg(data), durations_svg(data)]
    return page(request, "charts.html", "charts", data=data, svgs=svgs, hours=hours or "24")
