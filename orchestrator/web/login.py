"""Logging in and out of the console: the login form, its session, and the page an anonymous
request gets (401 with the form, which returns to where the request was going)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from orchestrator.web.auth import Login, api_refusal, csrf_checked
from orchestrator.web.render import TEMPLATES

router = APIRouter(include_in_schema=False)
HOME = "/runs"


def back_to(target: str | None) -> str:
    """A path on this console to go to after logging in (never another site)."""
    ok = target and target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok and target else HOME


def form(request: Request, target: str, error: str = "", status: int = 200) -> Response:
    values = {"next": back_to(target), "error": error}
    return TEMPLATES.TemplateResponse(request, "login.html", values, status_code=status)


def refusal(scope: Scope) -> Response:
    """What an anonymous request gets: 401, and the login form unless it asked the API."""
    if scope["path"].startswith("/api/"):
        return api_refusal()
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    return form(Request(scope), target, "log in to see this page", status=401)


@router.get("/login")
def login_form(request: Request, next: str = HOME) -> Response:
    login: Login = request.app.state.login
    if login.user_of(request.scope) is not None:
        return RedirectResponse(back_to(next), status_code=303)
    return form(request, next)


@router.post("/login")
def log_in(
    request: Request, user: str = Form(""), password: str = Form(""), next: str = Form(HOME)
) -> Response:
    login: Login = request.app.state.login
    if not login.check(user, password):
        return form(request, next, "wrong user or password", status=401)
    request.session.clear()
    request.session["user"] = login.user
    return RedirectResponse(back_to(next), status_code=303)


@router.post("/logout", dependencies=[Depends(csrf_checked)])
def log_out(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
