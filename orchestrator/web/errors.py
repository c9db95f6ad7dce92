"""What a failed request gets: a status that says what went wrong and the reason, as JSON for the
API and as a page for a person; never a traceback.

An unknown run or workflow is 404, malformed input 400, an action its run's status does not
allow (or a dead letter replayed already) 409, a server the console needs being away 503.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from orchestrator.errors import (
    InvalidTransition,
    OrchestratorError,
    RunNotFound,
    ServiceUnavailable,
    SignalError,
    ValidationError,
    WorkflowNotFound,
)
from orchestrator.web.filters import BadInput
from orchestrator.web.render import page

STATUS: tuple[tuple[type[Exception], int], ...] = (
    (BadInput, 400),
    (ValidationError, 400),
    (SignalError, 400),
    (RunNotFound, 404),
    (WorkflowNotFound, 404),
    (InvalidTransition, 409),
    (ServiceUnavailable, 503),
    (OrchestratorError, 409),
)
TITLES = {400: "Bad request", 401: "Log in", 403: "Forbidden", 404: "Not found", 409: "Conflict"}


def status_of(exc: Exception) -> int:
    return next((code for kind, code in STATUS if isinstance(exc, kind)), 500)


def answer(request: Request, status: int, reason: str) -> Response:
    """JSON ``{"detail": reason}`` for the API, the error page otherwise."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": reason}, status_code=status)
    title = TITLES.get(status, "Unavailable" if status == 503 else "Error")
    return page(request, "error.html", status=status, title=title, code=status, reason=reason)


def install(app: FastAPI) -> None:
    """Answer the console's errors, Starlette's (404 route, 405) and malformed requests."""

    async def known(request: Request, exc: Exception) -> Response:
        return answer(request, status_of(exc), str(exc))

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return answer(request, exc.status_code, str(exc.detail))

    async def malformed(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return answer(request, 400, reasons or "malformed request")

    for kind in (BadInput, OrchestratorError):
        app.add_exception_handler(kind, known)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, malformed)
