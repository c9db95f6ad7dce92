"""``/api/v1``: the console's JSON API (OpenAPI at ``/api/v1/openapi.json``).

These functions are the console's one way to its data and actions: the pages call them too
(``orchestrator.web.pages``) and render what they return.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from orchestrator.records import DeadLetterRecord
from orchestrator.web import filters
from orchestrator.web.actions import CONTROLS, Done
from orchestrator.web.auth import csrf_checked, user
from orchestrator.web.catalog import Schedule, Workflow
from orchestrator.web.charts import Charts, charts
from orchestrator.web.console import console_of
from orchestrator.web.model import Run, RunPage
from orchestrator.web.operations import Breaker, Workers

router = APIRouter(prefix="/api/v1", tags=["console"])
changes = [Depends(csrf_checked)]
MAX_HOURS = 24 * 90


class StartRun(BaseModel):
    """A run to start: inputs as ``run_workflow`` takes them, validated the same way."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    correlation_id: str | None = None


class SignalBody(BaseModel):
    """The signal of a ``signal`` action: its name and JSON payload (``run.signal``)."""

    name: str = ""
    payload: Any = None


class Token(BaseModel):
    csrf_token: str


@router.get("/runs")
def list_runs(request: Request, asked: Annotated[filters.RunFilters, Depends()]) -> RunPage:
    """Runs newest first; ``q`` finds a run id prefix, idempotency key or correlation id;
    ``after`` is the ``next`` of the page before."""
    return console_of(request).runs.page(asked.query(), asked.page_size())


@router.get("/runs/{run_id}")
def get_run(request: Request, run_id: str) -> Run:
    return console_of(request).runs.run(run_id)


@router.post("/runs/{run_id}/{action}", dependencies=changes)
def control_run(
    request: Request, run_id: str, action: str, signal: SignalBody | None = None
) -> Done:
    """``cancel``, ``pause``, ``resume`` or ``retry`` a run, or ``signal`` it (the body:
    ``{"name": ..., "payload": ...}``)."""
    if action == "signal":
        body = signal or SignalBody()
        actions = console_of(request).actions
        return actions.signal(run_id, body.name, body.payload, user(request))
    if action not in CONTROLS:
        raise HTTPException(404, f"no action {action!r}; one of {', '.join(CONTROLS)}")
    return console_of(request).actions.control(run_id, action, user(request))


@router.get("/workflows")
def list_workflows(request: Request) -> list[Workflow]:
    return console_of(request).catalog.workflows()


@router.get("/workflows/{name}")
def get_workflow(request: Request, name: str) -> Workflow:
    console = console_of(request)
    return console.catalog.describe(console.catalog.spec(name))


@router.post("/workflows/{name}/runs", dependencies=changes)
def start_run(request: Request, name: str, body: StartRun) -> Done:
    """Start a run of the workflow; its inputs are checked as at any submit (400 if wrong)."""
    console = console_of(request)
    spec = console.catalog.spec(name)
    return console.actions.start(
        spec.name, body.inputs, user(request), body.idempotency_key, body.correlation_id
    )


@router.get("/schedules")
def list_schedules(request: Request) -> list[Schedule]:
    return console_of(request).catalog.schedules()


@router.get("/dead-letters")
def list_dead_letters(
    request: Request, all: bool = False, limit: str | None = None
) -> list[DeadLetterRecord]:
    """Dead letters newest first; replayed ones too with ``all``."""
    return console_of(request).operations.dead_letters(filters.limit(limit), all)


@router.post("/dead-letters/{letter_id}/replay", dependencies=changes)
def replay_dead_letter(request: Request, letter_id: int) -> Done:
    """A step's letter retries its run; a plain task's is sent again. 409 if replayed."""
    console = console_of(request)
    if console.services.history.dead_letter(letter_id) is None:
        raise HTTPException(404, f"dead letter {letter_id} does not exist")
    return console.actions.replay(letter_id, user(request))


@router.get("/breakers")
def list_breakers(request: Request) -> list[Breaker]:
    return console_of(request).operations.breakers()


@router.get("/workers")
def list_workers(request: Request) -> Workers:
    return console_of(request).operations.workers()


@router.get("/charts")
def get_charts(request: Request, hours: str | None = None) -> Charts:
    """Runs, failures and step durations over the last ``hours`` (24)."""
    return charts(console_of(request).services.history, parse_hours(hours))


@router.get("/csrf")
def csrf_token(request: Request) -> Token:
    """The token to send as ``X-CSRF-Token`` with every POST."""
    return Token(csrf_token=console_of(request).login.csrf_token(user(request)))


def parse_hours(value: str | None) -> float:
    if not value:
        return 24.0
    try:
        hours = float(value)
    except ValueError:
        raise filters.BadInput(f"hours {value!r} is not a number") from None
    if not 0 < hours <= MAX_HOURS:
        raise filters.BadInput(f"hours {hours:g} is out of range; more than 0, at most {MAX_HOURS}")
    return hours
