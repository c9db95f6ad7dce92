"""The console: a web UI and JSON API (``/api/v1``) for runs, workflows, schedules, dead
letters, breakers and workers, served by ``orchestrator ui`` (and inside ``orchestrator dev``).

``create_console(app)`` is the ASGI app (FastAPI, Jinja2 templates, htmx with server-sent events
for live runs); ``serve()`` runs it with uvicorn. Everything it serves ships in this package.
"""

from orchestrator.web.app import create_console
from orchestrator.web.serve import serve

__all__ = ["create_console", "serve"]
