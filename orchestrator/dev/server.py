"""``orchestrator dev``: the whole stack for development, supervised by one foreground process.

Redis and PostgreSQL are embedded ones kept under the data directory unless ``ORCHESTRATOR_*``
URLs name servers (``orchestrator.dev.backends``). After the migrations, a worker, beat and Flower
(``orchestrator.dev.flower``) run as children (``orchestrator.dev.supervision``), their output in
``<data dir>/logs``. Ctrl-C or SIGTERM stops all of it; if one of them dies, the end of its log is
shown and everything stops with exit status 1. Embedded servers are for development: production
runs the services of ``docker-compose.yml``.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.dev.backends import Backends, Say, migrate, open_backends, say, shown
from orchestrator.dev.flower import FlowerAccess, flower_access, flower_conf
from orchestrator.dev.supervision import (
    Service,
    alive,
    http_ok,
    interrupt_on_signals,
    log_says,
    log_tail,
    stop_services,
    uninterrupted,
)
from orchestrator.settings import redact

CELERY = [sys.executable, "-m", "celery", "-A", "orchestrator.worker"]
READY_LINE = "orchestrator dev is running; press Ctrl-C to stop everything."


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


def command_line(argv: list[str]) -> str:
    """``argv`` as one would type it: ``python -m celery`` shown as ``celery``."""
    if argv[:3] == CELERY[:3]:
        argv = ["celery", *argv[3:]]
    return shlex.join(argv)
