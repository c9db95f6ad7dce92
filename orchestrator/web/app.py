"""The console as an ASGI app: FastAPI with the API, the pages, live updates and the package's
static files (htmx and its SSE extension are vendored: nothing is fetched at run time), behind
the login, with headers that keep the pages from being framed or running foreign scripts."""

from __future__ import annotations

from celery import Celery
from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.app import default_services
from orchestrator.web import api, errors, live, login, pages
from orchestrator.web.auth import Login, RequireLogin
from orchestrator.web.console import Console
from orchestrator.web.render import HERE

SESSION_HOURS = 12
ROUTERS = (api.router, login.router, live.router, pages.router)
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        b"form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def create_console(app: Celery | None = None, credentials: Login | None = None) -> FastAPI:
    """The console of ``app`` (the default app): its history, run state and breakers, behind
    ``credentials`` (default: ``ORCHESTRATOR_UI_AUTH``; ``ConsoleRefused`` when it is unset)."""
    services = default_services(app)
    credentials = credentials or Login.from_settings(services.settings)
    console = FastAPI(
        title="orchestrator console",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # FastAPI's docs pages load their scripts from a CDN
        redoc_url=None,
    )
    console.state.console = Console.of(services, credentials)
    console.state.login = credentials
    for router in ROUTERS:
        console.include_router(router)
    console.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    errors.install(console)
    console.add_middleware(RequireLogin, login=credentials, refusal=login.refusal)
    console.add_middleware(
        SessionMiddleware,
        secret_key=credentials.session_key,
        session_cookie="orchestrator_console",
        max_age=SESSION_HOURS * 3600,
        same_site="lax",
    )
    console.add_middleware(SafeHeaders)
    return console


class SafeHeaders:
    """ASGI middleware: every response carries :data:`HEADERS`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, sending if scope["type"] == "http" else send)
