"""The Redis and PostgreSQL of a development stack: configured servers or embedded ones.

``ORCHESTRATOR_*`` URLs that name both a Redis and a PostgreSQL are used as they are; otherwise
embedded servers are started under the data directory (``orchestrator.dev.embedded``). Either
way, :func:`migrate` brings the history database up to date before anything uses it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.dev.embedded import EmbeddedServers, start_embedded
from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import Settings, redact

# where embedded servers listen the first time when free: the ports of the default URLs
# (``Settings``), so a shell with no ORCHESTRATOR_* URLs reaches them too; then kept
DEFAULT_PORTS = (6379, 5432)
URL_VARS = (
    "ORCHESTRATOR_BROKER_URL",
    "ORCHESTRATOR_RESULT_BACKEND",
    "ORCHESTRATOR_REDIS_URL",
    "ORCHESTRATOR_DATABASE_URL",
)

Say = Callable[[str], None]
"""Where progress lines go."""


def say(text: str) -> None:
    """Print a progress line at once."""
    print(text, flush=True)


@dataclass
class Backends:
    """The Redis and PostgreSQL every process uses: configured ones, or embedded ones we started."""

    env: dict[str, str]
    chosen: dict[str, str]  # the variables we set, i.e. not taken from the caller's environment
    embedded: EmbeddedServers | None = None

    @property
    def redis_url(self) -> str:
        return self.env.get("ORCHESTRATOR_REDIS_URL") or self.env["ORCHESTRATOR_BROKER_URL"]

    @property
    def database_url(self) -> str:
        return self.env["ORCHESTRATOR_DATABASE_URL"]

    def processes(self) -> dict[int, tuple[str, Path]]:
        """pid -> (name, log) of the embedded servers, for watching them."""
        if self.embedded is None:
            return {}
        root, servers = self.embedded.data_dir, self.embedded
        found = {
            servers.redis_pid: ("embedded Redis", root / "redis" / "redis.log"),
            servers.postgres_pid: ("embedded PostgreSQL", root / "postgres" / "postgres.log"),
        }
        return {pid: entry for pid, entry in found.items() if pid is not None}

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def open_backends(
    data_dir: Path, environ: Mapping[str, str] = os.environ, say: Say = say
) -> Backends:
    """Configured servers when Redis and PostgreSQL URLs are both set, else embedded ones."""
    given = {name: environ[name] for name in URL_VARS if environ.get(name)}
    redis = "ORCHESTRATOR_REDIS_URL" in given or "ORCHESTRATOR_BROKER_URL" in given
    if redis and "ORCHESTRATOR_DATABASE_URL" in given:
        say("using the servers named by the ORCHESTRATOR_* variables")
        return Backends(given, {})
    say(f"starting embedded Redis and PostgreSQL (data in {shown(data_dir)})")
    servers = start_embedded(data_dir, ports=DEFAULT_PORTS)
    chosen = {name: url for name, url in servers.env().items() if name not in given}
    return Backends({**servers.env(), **given}, chosen, servers)


def migrate(env: Mapping[str, str]) -> None:
    """Create the history database if needed and apply the migrations."""
    from sqlalchemy.exc import OperationalError

    from orchestrator.stores.postgres.migrate import upgrade

    settings = Settings.model_validate({"database_url": env["ORCHESTRATOR_DATABASE_URL"]})
    try:
        upgrade(settings.sqlalchemy_url)
    except OperationalError as exc:
        detail = str(exc.orig).strip().splitlines()[0]
        fix = "Start PostgreSQL or set ORCHESTRATOR_DATABASE_URL"
        raise ServiceUnavailable("PostgreSQL", redact(settings.database_url), detail, fix) from exc


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)
