"""Pages from the package's Jinja2 templates (autoescaped), with what every page shows: the
user, the CSRF token for its forms, the navigation."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.responses import Response

HERE = Path(__file__).resolve().parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
NAV = (
    ("runs", "/runs", "Runs"),
    ("workflows", "/workflows", "Workflows"),
    ("schedules", "/schedules", "Schedules"),
    ("dead-letters", "/dead-letters", "Dead letters"),
    ("breakers", "/breakers", "Breakers"),
    ("workers", "/workers", "Workers"),
    ("charts", "/charts", "Charts"),
)


def when(value: datetime | None) -> str:
    """A time as UTC to the second (``-`` for none)."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def took(value: float | None) -> str:
    """Seconds as ``850ms``, ``12.3s`` or ``4m05s`` (``-`` for none)."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    minutes, rest = divmod(int(value), 60)
    return f"{minutes}m{rest:02d}s"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, sort_keys=True)


RUN_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


def runlinks(text: str) -> Markup:
    """``text`` escaped, with each run id in it a link to its run."""
    return Markup(RUN_ID.sub(lambda m: f'<a href="/runs/{m[0]}">{m[0]}</a>', str(escape(text))))


TEMPLATES.env.filters.update(when=when, took=took, pretty=pretty, runlinks=runlinks)


def context(request: Request, section: str = "", **values: Any) -> dict[str, Any]:
    """What every page's template gets, and ``values``."""
    user = request.scope.get("user")
    login = request.app.state.login
    return {
        "nav": NAV,
        "section": section,
        "user": user,
        "csrf": login.csrf_token(user) if user else "",
        "flower": request.app.state.console.services.settings.flower_url,
        **values,
    }


def page(
    request: Request, name: str, section: str = "", status: int = 200, **values: Any
) -> Response:
    return TEMPLATES.TemplateResponse(
        request, name, context(request, section, **values), status_code=status
    )


def fragment(request: Request, name: str, **values: Any) -> str:
    """A template rendered to a string (what the live run page swaps in)."""
    return TEMPLATES.get_template(name).render(context(request, **values))
