"""What the CLI says when a command cannot do its work: one line, never a traceback.

A server that is away (Redis, the broker, PostgreSQL), a database that does not exist yet, a
task module that cannot be imported, a setting that does not parse: each becomes ``error: …``
with what to do. Anything else is a bug, said in one line too, with ``-v`` for its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError as PydanticError

from orchestrator.errors import OrchestratorError, ServiceUnavailable
from orchestrator.settings import Settings, get_settings, redact

DEV_ENV = (
    "with `orchestrator dev` running, run `source .orchestrator/env` in this shell (from the "
    "project's directory) or paste the export lines dev printed"
)


def explain(exc: BaseException) -> str | None:
    """The one line to print for ``exc``, or None for an error that is not the user's to fix."""
    if isinstance(exc, ServiceUnavailable):
        return _with_dev_hint(str(exc))
    if isinstance(exc, OrchestratorError):
        return str(exc)
    if isinstance(exc, PydanticError):  # an ORCHESTRATOR_* variable that does not parse
        problems = "; ".join(
            f"ORCHESTRATOR_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return f"a setting is not valid: {problems}"
    if isinstance(exc, ImportError):
        settings = _settings()
        modules = ",".join(settings.task_modules) if settings else "?"
        return (
            f"importing the task modules failed ({type(exc).__name__}: {exc}); check "
            f"ORCHESTRATOR_TASK_MODULES={modules} and run from the project's directory"
        )
    return _server_away(exc)


def _server_away(exc: BaseException) -> str | None:
    """A client library's error for a server that is away, said like ``ServiceUnavailable``."""
    module = type(exc).__module__.split(".")[0]
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = detail[0] if detail else type(exc).__name__
    settings = _settings()
    known = {
        "redis": ("Redis", settings and settings.state_url, "ORCHESTRATOR_REDIS_URL"),
        "kombu": ("the Celery broker", settings and settings.broker_url, "ORCHESTRATOR_BROKER_URL"),
        "sqlalchemy": (
            "PostgreSQL",
            settings and settings.database_url,
            "ORCHESTRATOR_DATABASE_URL",
        ),
        "psycopg": ("PostgreSQL", settings and settings.database_url, "ORCHESTRATOR_DATABASE_URL"),
    }
    if module in known:
        service, url, variable = known[module]
        away = ServiceUnavailable(
            service, redact(url or "?"), reason, f"Start it or set {variable}"
        )
        return _with_dev_hint(str(away))
    if isinstance(exc, ConnectionError):
        return f"a server did not answer: {reason}"
    return None


def _with_dev_hint(message: str) -> str:
    """``message``, with where dev's servers are when the database or a server is missing."""
    if "does not exist" in message or "Connection refused" in message:
        return f"{message.rstrip('.')}; {DEV_ENV}"
    return message


def _settings() -> Settings | None:
    try:
        return get_settings()
    except Exception:  # the settings themselves do not parse
        return None
