"""The connection to the history database: one SQLAlchemy engine per process, and PostgreSQL
being away reported as ``ServiceUnavailable`` instead of a driver traceback."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator.codec import for_postgres
from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import redact

T = TypeVar("T")


class Database:
    """A PostgreSQL database, through a per-process SQLAlchemy engine."""

    def __init__(self, sqlalchemy_url: str) -> None:
        self.url = sqlalchemy_url
        self._engine: Engine | None = None
        self._pid = 0

    @property
    def engine(self) -> Engine:
        """This process's engine, with at most 2 connections: one kept open, one more while
        two threads (the history writer and a step, say) need one at once; a third waits for
        one to be free (30 s at most). A worker with ``-c 32`` holds at most 66 (32 pool
        children and the main process), not ~200.

        Connections are checked before use and replaced after 30 minutes; a forked pool child
        gets an engine of its own (it must not share its parent's connections)."""
        if self._engine is None or self._pid != os.getpid():
            self._engine = create_engine(
                self.url,
                pool_size=1,
                max_overflow=1,
                pool_pre_ping=True,
                pool_recycle=1800,
                json_serializer=for_postgres,  # Celery's JSON in every JSONB column
            )
            self._pid = os.getpid()
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None and self._pid == os.getpid():
            self._engine.dispose()
        self._engine = None

    def ping(self) -> None:
        """Reach the database once (PostgreSQL away: ``ServiceUnavailable``)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def reachable(cls: type[T]) -> type[T]:
    """Every public method of ``cls`` and its bases raises ``ServiceUnavailable`` (URL
    redacted, what to do) when PostgreSQL cannot be reached, instead of a driver traceback."""
    seen: set[str] = set()
    for klass in cls.__mro__[:-1]:  # not object's
        for name, method in vars(klass).items():
            if name in seen or name.startswith("_") or name == "dispose":
                continue
            seen.add(name)
            if callable(method):
                setattr(cls, name, _translated(method))
    return cls


def _translated(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Database, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            orig = getattr(exc, "orig", None)
            detail = str(orig).strip().splitlines()[0] if orig else str(exc)
            raise ServiceUnavailable(
                "PostgreSQL",
                redact(render_url(self.url)),
                detail,
                "Start PostgreSQL, or set ORCHESTRATOR_DATABASE_URL to a server that runs "
                "(then `orchestrator db upgrade`)",
            ) from exc

    return call


def render_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)
