"""``orchestrator dev``: the whole stack for development, supervised by one foreground process.

Redis and PostgreSQL are embedded ones kept under the data directory (``orchestrator.dev.embedded``)
unless ``ORCHESTRATOR_*`` URLs name servers. After the migrations, a worker, beat and Flower run
as children (``orchestrator.dev.supervision``), their output in ``<data dir>/logs``. Ctrl-C or
SIGTERM stops all of it; if one of them dies, the end of its log is shown and everything stops
with exit status 1. Embedded servers are for development: production runs the services of
``docker-compose.yml``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.dev.embedded import EmbeddedServers, start_embedded
from orchestrator.dev.supervision import (
    Service,
    SupervisionError,
    alive,
    free_port,
    http_ok,
    interrupt_on_signals,
    log_says,
    log_tail,
    stop_services,
    uninterrupted,
)
from orchestrator.errors import ServiceUnavailable
from orchestrator.settings import Settings, redact

URL_VARS = (
    "ORCHESTRATOR_BROKER_URL",
    "ORCHESTRATOR_RESULT_BACKEND",
    "ORCHESTRATOR_REDIS_URL",
    "ORCHESTRATOR_DATABASE_URL",
)
CELERY = [sys.executable, "-m", "celery", "-A", "orchestrator.worker"]
FLOWER_PORT = 5555
FLOWER_USER = "admin"
READY_LINE = "orchestrator dev is running; press Ctrl-C to stop everything."

Say = Callable[[str], None]


def say(text: str) -> None:
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
    servers = start_embedded(data_dir)
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


def worker_argv(name: str, *args: str, loglevel: str = "INFO") -> list[str]:
    """The command line of a worker node ``name`` (as a user would type it, plus ``args``)."""
    return [
        *CELERY,
        "worker",
        f"--loglevel={loglevel}",
        "--without-mingle",
        "--without-gossip",
        "-n",
        f"{name}@%h",
        *args,
    ]


def worker_service(env: dict[str, str], log: Path, concurrency: int, name: str) -> Service:
    """``celery -A orchestrator.worker worker -c N``, ready once it logs so."""
    argv = worker_argv(name, "-c", str(concurrency))
    return Service("worker", argv, log, log_says(b" ready."), env)


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path = Path(".orchestrator")
    concurrency: int = 2
    beat: bool = True
    flower: bool = True


@dataclass(frozen=True)
class FlowerAccess:
    url: str
    basic_auth: str  # user:password
    generated: bool  # ours, from the credentials file: shown once, at startup

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or FLOWER_PORT


def flower_access(data_dir: Path, environ: Mapping[str, str] = os.environ) -> FlowerAccess:
    """Where Flower listens (5555 if free) and its credentials: configured or generated."""
    url = environ.get("ORCHESTRATOR_FLOWER_URL") or f"http://127.0.0.1:{free_port(FLOWER_PORT)}"
    given = environ.get("ORCHESTRATOR_FLOWER_BASIC_AUTH")
    if given:
        return FlowerAccess(url, given, generated=False)
    return FlowerAccess(url, flower_credentials(data_dir / "flower-credentials"), generated=True)


def flower_credentials(path: Path) -> str:
    """``admin:<random>`` kept in ``path`` (mode 0600), so it stays the same between runs."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        user, _, password = value.partition(":")
        if user and password:
            path.chmod(0o600)
            return value
    value = f"{FLOWER_USER}:{secrets.token_urlsafe(18)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(value + "\n")
    return value


class DevStack:
    """The processes ``orchestrator dev`` runs, started and stopped together."""

    def __init__(self, options: DevOptions, say: Say = say) -> None:
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.say = say
        self.backends: Backends | None = None
        self.flower: FlowerAccess | None = None
        self.services: list[Service] = []

    def start(self) -> None:
        conf = flower_conf() if self.options.flower else None
        self.backends = open_backends(self.data_dir, say=self.say)
        self.say("applying migrations")
        migrate(self.backends.env)
        env = dict(self.backends.env)
        if conf is not None:
            self.flower = flower_access(self.data_dir)
            env["ORCHESTRATOR_FLOWER_URL"] = self.flower.url
        self.services = self._services(env, conf)
        for service in self.services:
            self.say(f"starting {service.name}: {command_line(service.argv)}")
            service.start()
        for service in self.services:
            service.await_ready()
            self.say(f"{service.name} is ready")

    def _services(self, env: dict[str, str], conf: Path | None) -> list[Service]:
        logs = self.data_dir / "logs"
        found = [worker_service(env, logs / "worker.log", self.options.concurrency, "dev")]
        if self.options.beat:
            argv = [*CELERY, "beat", "--loglevel=INFO", "-s", str(self.data_dir / "beat-schedule")]
            found.append(Service("beat", argv, logs / "beat.log", log_says(b"Starting..."), env))
        if conf is not None and self.flower is not None:
            port = self.flower.port
            argv = [*CELERY, "flower", f"--conf={conf}", "--address=127.0.0.1", f"--port={port}"]
            ready = http_ok(f"http://127.0.0.1:{port}/healthcheck")
            auth = {"ORCHESTRATOR_FLOWER_BASIC_AUTH": self.flower.basic_auth}
            found.append(Service("flower", argv, logs / "flower.log", ready, {**env, **auth}))
        return found

    def announce(self) -> None:
        assert self.backends is not None
        self.say("\nready:")
        self.say(f"  {'Redis':<11} {redact(self.backends.redis_url)}")
        self.say(f"  {'PostgreSQL':<11} {redact(self.backends.database_url)}")
        exports = dict(self.backends.chosen)
        for service in self.services:
            where = f"log {shown(service.log)}"
            if service.name == "flower" and self.flower is not None:
                where = f"{self.flower.url}  {self._flower_login()}  ({where})"
                exports["ORCHESTRATOR_FLOWER_URL"] = self.flower.url
            self.say(f"  {service.name.capitalize():<11} {where}")
        self.say("\nto use these servers from another shell:")
        if not self.backends.chosen:
            self.say("  (keep the ORCHESTRATOR_* URLs this shell has)")
        for name, value in sorted(exports.items()):
            self.say(f"  export {name}={shlex.quote(value)}")
        self.say(f"\ndata stays in {shown(self.data_dir)} between runs.\n{READY_LINE}")

    def _flower_login(self) -> str:
        assert self.flower is not None
        user, _, password = self.flower.basic_auth.partition(":")
        if self.flower.generated:
            return f"user {user}  password {password}"
        return f"user {user} (password from ORCHESTRATOR_FLOWER_BASIC_AUTH)"

    def watch(self, every: float = 0.5) -> int:
        """Return 1 once a child dies (a signal interrupts this with ``KeyboardInterrupt``)."""
        while (dead := self.first_dead()) is None:
            time.sleep(every)
        self.say(f"\n{dead}\nstopping everything")
        return 1

    def first_dead(self) -> str | None:
        for service in self.services:
            code = None if service.proc is None else service.proc.poll()
            if code is not None:
                return f"{service.name} exited with code {code}\n{service.tail()}"
        watched = self.backends.processes() if self.backends is not None else {}
        for pid, (name, log) in watched.items():
            if not alive(pid):
                return f"{name} exited\n{log_tail(log)}"
        return None

    def stop(self) -> None:
        started = [service.name for service in self.services if service.proc is not None]
        if started:
            self.say(f"stopping {', '.join(reversed(started))}")
        stop_services(self.services)
        if self.backends is not None and self.backends.embedded is not None:
            self.say("stopping embedded Redis and PostgreSQL")
            self.backends.stop()
        self.say("stopped")


def run(options: DevOptions, say: Say = say) -> int:
    """Start everything, wait for Ctrl-C, SIGTERM or a dying child, then stop everything."""
    stack = DevStack(options, say)
    with interrupt_on_signals():
        try:
            stack.start()
            stack.announce()
            return stack.watch()
        except KeyboardInterrupt:
            say("\ninterrupted")
            return 0
        finally:
            with uninterrupted():
                stack.stop()


def flower_conf() -> Path:
    conf = Path("config/flowerconfig.py").resolve()
    if not conf.is_file():
        raise SupervisionError(
            f"{conf} not found: run `orchestrator dev` from the project root, or pass --no-flower"
        )
    return conf


def command_line(argv: list[str]) -> str:
    """``argv`` as one would type it: ``python -m celery`` shown as ``celery``."""
    if argv[:3] == CELERY[:3]:
        argv = ["celery", *argv[3:]]
    return shlex.join(argv)


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd()))
    return str(path)
