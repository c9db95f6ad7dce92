"""Who may use the console: one login from ``ORCHESTRATOR_UI_AUTH`` (``user:password``), given
on the login form (then a signed session cookie) or as HTTP basic auth on any request.

Every route but the login form (and its stylesheet) is behind it, the API included: an anonymous
request gets 401 (the API's with ``WWW-Authenticate: Basic``, a page's with the login form).
Every request that changes something carries a CSRF token (a form's ``csrf_token`` field or an
``X-CSRF-Token`` header), an HMAC of the user under a key made when the console starts, which
another site's page cannot read. The password is never logged, shown or put in a cookie.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings

AUTH_VAR = "ORCHESTRATOR_UI_AUTH"
PUBLIC = frozenset({"/login", "/static/console.css"})  # the login form and its style
CSRF_FIELD, CSRF_HEADER = "csrf_token", "x-csrf-token"
REALM = 'Basic realm="orchestrator console", charset="UTF-8"'
HOW_TO = f"  export {AUTH_VAR}=admin:$(openssl rand -hex 16)"


class ConsoleRefused(OrchestratorError):
    """The console will not start: it has no valid credentials to ask for."""


@dataclass(frozen=True)
class Login:
    """The console's one login, and the key its sessions and CSRF tokens are signed with."""

    user: str
    password: str = field(repr=False)
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Login:
        """The login of ``ORCHESTRATOR_UI_AUTH``; ``ConsoleRefused`` (saying how to set it,
        never echoing it) when it is unset or not ``user:password``."""
        secret = settings.ui_auth
        value = secret.get_secret_value() if secret is not None else ""
        user, sep, password = value.partition(":")
        if not value:
            raise ConsoleRefused(f"the console refuses to start: {AUTH_VAR} is not set\n{HOW_TO}")
        if not (sep and user and password):
            raise ConsoleRefused(
                f"the console refuses to start: {AUTH_VAR} is not user:password\n{HOW_TO}"
            )
        return cls(user, password)

    def check(self, user: str, password: str) -> bool:
        """Both match (in constant time)."""
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_password

    @property
    def session_key(self) -> str:
        return hashlib.sha256(b"session:" + self.key).hexdigest()

    def csrf_token(self, user: str) -> str:
        return hmac.new(self.key, f"csrf:{user}".encode(), hashlib.sha256).hexdigest()

    def user_of(self, scope: Scope) -> str | None:
        """The user a request is from: its session's, or its valid basic credentials'."""
        session = scope.get("session") or {}
        if session.get("user") == self.user:
            return self.user
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                return self._basic(value)
        return None

    def _basic(self, header: bytes) -> str | None:
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, sep, password = base64.b64decode(encoded.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if sep and self.check(user, password) else None


class RequireLogin:
    """ASGI middleware: only the login form is served to an anonymous request."""

    def __init__(self, app: ASGIApp, login: Login, refusal: Callable[[Scope], Response]) -> None:
        self.app = app
        self.login = login
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC:
            await self.app(scope, receive, send)
            return
        user = self.login.user_of(scope)
        if user is None:
            await self.refusal(scope)(scope, receive, send)
            return
        scope["user"] = user
        await self.app(scope, receive, send)


def api_refusal(detail: str = "log in: HTTP basic auth with ORCHESTRATOR_UI_AUTH") -> Response:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": REALM})


def user(request: Request) -> str:
    """The logged-in user (the middleware let the request through)."""
    return str(request.scope["user"])


async def csrf_checked(request: Request) -> None:
    """Refuse (403) a request that changes something without this user's CSRF token."""
    login: Login = request.app.state.login
    given: Any = request.headers.get(CSRF_HEADER)
    if given is None and _is_form(request):
        given = (await request.form()).get(CSRF_FIELD)
    expected = login.csrf_token(user(request))
    if not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise HTTPException(
            403,
            "missing or wrong CSRF token: send the csrf_token of the page's form, or the "
            "X-CSRF-Token header with the token of GET /api/v1/csrf",
        )


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "")
    return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))
