"""``orchestrator dev``: the whole stack for development, supervised by one foreground process.

Redis and PostgreSQL are embedded ones kept under the data directory unless ``ORCHESTRATOR_*``
URLs name servers (``orchestrator.dev.backends``). After the migrations, a worker, beat, Flower
(``orchestrator.dev.flower``) and the console (``orchestrator ui``) run as children
(``orchestrator.dev.supervision``), their output in ``<data dir>/logs``. Ctrl-C or SIGTERM stops
all of it; if one of them dies, the end of its log is shown and everything stops with exit
status 1. With ``--reload``, the worker and beat restart when the project's Python or YAML files
change (``orchestrator.dev.reload``), and one that dies (a syntax error, say) waits for the next
change instead. The addresses stay the same across restarts, and the ``export`` lines another
shell needs are printed and kept in ``<data dir>/env`` (``orchestrator.dev.exports``). Embedded
servers are for development: production runs the services of ``docker-compose.yml``.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.dev.backends import Backends, Say, migrate, open_backends, say, shown
from orchestrator.dev.exports import EXAMPLE, cli_directory, export_lines, exports, write_env_file
from orchestrator.dev.flower import FlowerAccess, flower_access, flower_conf, flower_credentials
from orchestrator.dev.reload import Watcher
from orchestrator.dev.supervision import (
    Service,
    SupervisionError,
    alive,
    http_ok,
    interrupt_on_signals,
    kept_port,
    log_says,
    log_tail,
    stop_services,
    uninterrupted,
)
from orchestrator.settings import Settings, redact

CELERY = [sys.executable, "-m", "celery", "-A", "orchestrator.worker"]
READY_LINE = "orchestrator dev is running; press Ctrl-C to stop everything."
RELOADED = ("worker", "beat")  # what runs the project's code (Flower keeps its task list)
RELOAD_STOP_TIMEOUT = 10.0
CONSOLE_PORT = 8765
UI_AUTH = "ORCHESTRATOR_UI_AUTH"


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


def worker_service(
    env: dict[str, str], log: Path, concurrency: int, name: str, events: bool = False
) -> Service:
    """``celery -A orchestrator.worker worker -c N`` (``-E``: with task events, for Flower),
    ready once it logs so."""
    argv = worker_argv(name, "-c", str(concurrency), *(["-E"] if events else []))
    return Service("worker", argv, log, log_says(b" ready."), env)


def console_service(env: dict[str, str], log: Path, data_dir: Path) -> Service:
    """``orchestrator ui`` on the port it had last time (8765 at first), its login
    ``ORCHESTRATOR_UI_AUTH`` or one generated and kept like Flower's."""
    port = kept_port(data_dir / "console-port", CONSOLE_PORT)
    auth = os.environ.get(UI_AUTH) or flower_credentials(data_dir / "console-credentials")
    argv = [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)]
    ready = http_ok(f"http://127.0.0.1:{port}/login")
    return Service("console", argv, log, ready, {**env, UI_AUTH: auth})


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path = Path(".orchestrator")
    concurrency: int = 2
    beat: bool = True
    flower: bool = True
    reload: bool = False


class DevStack:
    """The processes ``orchestrator dev`` runs, started and stopped together."""

    def __init__(self, options: DevOptions, say: Say = say) -> None:
        self.options = options
        self.data_dir = options.data_dir.resolve()
        self.say = say
        self.backends: Backends | None = None
        self.flower: FlowerAccess | None = None
        self.services: list[Service] = []
        self.watcher: Watcher | None = None
        self.broken: set[str] = set()  # with --reload: died, waiting for a change

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
        if self.options.reload:
            workflows = Path(Settings().workflows_path)
            self.watcher = Watcher([Path.cwd(), workflows], [self.data_dir])
            self.watcher.start()

    def _services(self, env: dict[str, str], conf: Path | None) -> list[Service]:
        logs = self.data_dir / "logs"
        found = [
            worker_service(
                env, logs / "worker.log", self.options.concurrency, "dev", events=conf is not None
            )
        ]
        if self.options.beat:
            argv = [*CELERY, "beat", "--loglevel=INFO", "-s", str(self.data_dir / "beat-schedule")]
            found.append(Service("beat", argv, logs / "beat.log", log_says(b"Starting..."), env))
        if conf is not None and self.flower is not None:
            port = self.flower.port
            argv = [*CELERY, "flower", f"--conf={conf}", "--address=127.0.0.1", f"--port={port}"]
            ready = http_ok(f"http://127.0.0.1:{port}/healthcheck")
            auth = {"ORCHESTRATOR_FLOWER_BASIC_AUTH": self.flower.basic_auth}
            found.append(Service("flower", argv, logs / "flower.log", ready, {**env, **auth}))
        found.append(console_service(env, logs / "console.log", self.data_dir))
        return found

    def announce(self) -> None:
        """Where each service is, what another shell needs, and how to reach the CLI."""
        assert self.backends is not None
        self.say("\nready:")
        self.say(f"  {'Redis':<11} {redact(self.backends.redis_url)}")
        self.say(f"  {'PostgreSQL':<11} {redact(self.backends.database_url)}")
        urls = dict(self.backends.chosen)
        for service in self.services:
            where = f"log {shown(service.log)}"
            if service.name == "flower" and self.flower is not None:
                where = f"{self.flower.url}  {self._flower_login()}  ({where})"
                urls["ORCHESTRATOR_FLOWER_URL"] = self.flower.url
            if service.name == "console":
                where = f"{_console_login(service)}  ({where})"
            self.say(f"  {service.name.capitalize():<11} {where}")
        self._how_to_use(urls)
        if self.watcher is not None:
            roots = ", ".join(str(root) for root in self.watcher.roots)
            self.say(
                f"reloading: the worker and beat restart when a .py or .yaml file changes "
                f"under {roots}"
            )
        self.say(f"data stays in {shown(self.data_dir)} between runs.\n{READY_LINE}")

    def _how_to_use(self, urls: dict[str, str]) -> None:
        """The export lines (also written to ``<data dir>/env``) and the CLI's whereabouts."""
        assert self.backends is not None
        cli = cli_directory()
        lines = export_lines(exports(urls, Settings()), cli)
        moved = write_env_file(self.data_dir, lines)
        env_file = shown(self.data_dir / "env")
        self.say(f"\nto use these servers from another shell: source {env_file}  (or paste:)")
        if not self.backends.chosen:
            self.say("  (keep the ORCHESTRATOR_* URLs this shell has)")
        for line in lines:
            self.say(f"  {line}")
        if moved:
            self.say(f"the addresses changed since the last start: source {env_file} again")
        where = shown(cli / "orchestrator") if cli is not None else "python -m orchestrator.cli"
        self.say(f"\nthe CLI: {where} (`orchestrator` once PATH is exported), e.g.\n  {EXAMPLE}")

    def _flower_login(self) -> str:
        assert self.flower is not None
        user, _, password = self.flower.basic_auth.partition(":")
        if self.flower.generated:
            return f"user {user}  password {password}"
        return f"user {user} (password from ORCHESTRATOR_FLOWER_BASIC_AUTH)"

    def watch(self, every: float = 0.5) -> int:
        """Return 1 once a child dies (a signal interrupts this with ``KeyboardInterrupt``);
        with ``--reload``, restart the worker and beat on changes, and let them wait for the
        next change when they die."""
        while True:
            changed = self.watcher.changed() if self.watcher is not None else set()
            if changed:
                self.reload(changed)
            dead = self.first_dead()
            if dead is not None:
                name, why = dead
                if self.watcher is None or name not in RELOADED:
                    self.say(f"\n{why}\nstopping everything")
                    return 1
                self.broken.add(name)
                self.say(f"\n{why}\n{name} starts again when a file changes")
            time.sleep(every)

    def reload(self, changed: set[Path]) -> None:
        """Restart the worker and beat (the code on disk changed)."""
        names = sorted(shown(path) for path in changed)
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        restarted = [s for s in self.services if s.name in RELOADED]
        which = " and ".join(s.name for s in restarted)
        self.say(f"\n{', '.join(names[:3])}{more} changed: restarting {which}")
        stop_services(restarted, RELOAD_STOP_TIMEOUT)
        self.broken.clear()
        for service in restarted:
            service.start()
        for service in restarted:
            try:
                service.await_ready()
            except SupervisionError as exc:
                self.broken.add(service.name)
                self.say(f"{exc}\n{service.name} starts again when a file changes")
            else:
                self.say(f"{service.name} is ready (reloaded)")

    def first_dead(self) -> tuple[str, str] | None:
        """The first child that died (and was not reported yet): its name and what to show."""
        for service in self.services:
            code = None if service.proc is None else service.proc.poll()
            if code is not None and service.name not in self.broken:
                return service.name, f"{service.name} exited with code {code}\n{service.tail()}"
        watched = self.backends.processes() if self.backends is not None else {}
        for pid, (name, log) in watched.items():
            if not alive(pid):
                return name, f"{name} exited\n{log_tail(log)}"
        return None

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        started = [service.name for service in self.services if service.proc is not None]
        if started:
            self.say(f"stopping {', '.join(reversed(started))}")
        stop_services(self.services)
        if self.backends is not None and self.backends.embedded is not None:
            self.say("stopping embedded Redis and PostgreSQL")
            self.backends.stop()
        self.say("stopped")


def _console_login(service: Service) -> str:
    user, _, password = service.env[UI_AUTH].partition(":")
    url = f"http://127.0.0.1:{service.argv[-1]}"
    if os.environ.get(UI_AUTH):
        return f"{url}  user {user} (password from {UI_AUTH})"
    return f"{url}  user {user}  password {password}"


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
