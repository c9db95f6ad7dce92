"""A cluster for tests against real processes: Redis, PostgreSQL, ``celery worker`` and beat.

::

    with Cluster(env={"ORCHESTRATOR_TASK_MODULES": "myproject.tasks"}) as cluster:
        cluster.start_worker()
        run = run_workflow("nightly", {"day": "2026-01-02"})  # this process uses the cluster
        assert run.wait(timeout=30) == ...

Servers: with ``ORCHESTRATOR_REDIS_URL`` (or ``ORCHESTRATOR_BROKER_URL``) and
``ORCHESTRATOR_DATABASE_URL`` set, the cluster uses those servers, in a Redis db and a database of
its own that it empties and drops at the end (the Redis is the broker too); otherwise, or with
``own_servers=True``, it starts Redis and PostgreSQL of its own under its directory
(``orchestrator.testing.servers``: a test may stop, restart or kill them). Either way the database
is migrated before anything uses it.

This process: from :meth:`Cluster.start` to :meth:`Cluster.close` the cluster's ``ORCHESTRATOR_*``
variables are the only ones in ``os.environ`` (any other is set aside, then restored), and
orchestrator re-reads them (``reset_default_app()``, ``get_settings.cache_clear()``). Workers and
beat inherit that environment, so every process of the test runs with the same settings.

Workers run under the cluster as under systemd when ``supervise=True``: one that exits by itself
(not stopped or killed through :class:`Worker`) is replaced a second later, and stays listed with
the reason (:meth:`Worker.died`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from orchestrator.app import reset_default_app
from orchestrator.dev.backends import URL_VARS
from orchestrator.dev.server import CELERY
from orchestrator.dev.supervision import STOP_TIMEOUT, Service, log_says, stop_services
from orchestrator.settings import Settings, get_settings
from orchestrator.stores.postgres.migrate import upgrade
from orchestrator.testing.servers import (
    PostgresServer,
    RedisServer,
    claim_redis_db,
    create_database,
    drop_database,
    release_redis_db,
)
from orchestrator.testing.workers import Worker, WorkerRecipe

PREFIX = "ORCHESTRATOR_"
SUPERVISE_EVERY = 1.0  # seconds before a worker that died is replaced


class Cluster:
    """Servers, workers and beat for a test; ``env`` holds its ``ORCHESTRATOR_*`` settings
    (task modules, timings: everything but the server URLs, which the cluster sets)."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        name: str = "orchestrator-cluster",
        own_servers: bool = False,
        separate_broker: bool = False,
        supervise: bool = False,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        # outside pytest's 0700 temp root: PostgreSQL runs as its own account when we are root
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self.root.chmod(0o755)
        self.extra_env = dict(env or {})
        self.separate_broker = separate_broker
        self.shared = None if own_servers else _configured_servers(environ)  # to attach to
        self.redis: RedisServer | None = None  # servers of our own (None when attached)
        self.broker: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.redis_url = self.broker_url = self.database_url = ""
        self.workers: list[Worker] = []
        self.beat: Service | None = None
        self._session = uuid.uuid4().hex
        self._saved: dict[str, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = (
            threading.Thread(target=self._supervise, name="cluster-supervisor", daemon=True)
            if supervise
            else None
        )

    # -- servers and this process -------------------------------------------------------------

    def start(self) -> Cluster:
        """Start or attach to the servers, migrate, and point this process at them."""
        try:
            if self.shared is None:
                self._start_servers()
            else:
                self._attach(*self.shared)
            upgrade(Settings(database_url=self.database_url).sqlalchemy_url)
            self.activate()
        except BaseException:
            self.close()
            raise
        if self._supervisor is not None:
            self._supervisor.start()
        return self

    def _start_servers(self) -> None:
        self.redis = RedisServer(self.root / "redis")
        self.redis.start()
        self.broker = self.redis
        if self.separate_broker:
            self.broker = RedisServer(self.root / "broker")
            self.broker.start()
        self.postgres = PostgresServer(self.root / "postgres")
        self.postgres.start()
        self.redis_url, self.broker_url = self.redis.url(), self.broker.url()
        self.database_url = create_database(self.postgres.url(), "orchestrator")

    def _attach(self, redis_url: str, database_url: str) -> None:
        self.redis_url = claim_redis_db(redis_url, self._session)
        self.broker_url = self.redis_url
        if self.separate_broker:
            self.broker_url = claim_redis_db(redis_url, self._session)
        self.database_url = create_database(database_url)

    def env(self) -> dict[str, str]:
        """The ``ORCHESTRATOR_*`` variables of every process of the cluster."""
        return {
            **self.extra_env,
            "ORCHESTRATOR_BROKER_URL": self.broker_url,
            "ORCHESTRATOR_RESULT_BACKEND": self.redis_url,
            "ORCHESTRATOR_REDIS_URL": self.redis_url,
            "ORCHESTRATOR_DATABASE_URL": self.database_url,
        }

    def activate(self) -> None:
        """Point orchestrator in this process at the cluster (again, after a change of
        ``extra_env``): its variables in ``os.environ``, a new default app and settings."""
        if self._saved is None:
            self._saved = {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}
        _set_orchestrator_environ(self.env())

    def deactivate(self) -> None:
        """Give this process back the ``ORCHESTRATOR_*`` variables it had before."""
        if self._saved is not None:
            _set_orchestrator_environ(self._saved)
            self._saved = None

    # -- workers and beat ---------------------------------------------------------------------

    def start_worker(
        self,
        prefix: str = "w",
        concurrency: int = 2,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        wait: bool = True,
    ) -> Worker:
        """A worker node ``<prefix><n>`` with ``-c concurrency``, ``env`` over the cluster's and
        ``args`` added to its command line; with ``wait``, returned once it consumes."""
        return self._start(WorkerRecipe(prefix, concurrency, dict(env or {}), tuple(args)), wait)

    def replace(self, worker: Worker, wait: bool = True) -> Worker:
        """Start a worker like ``worker`` (which was killed or died), as a supervisor would."""
        worker.replaced = True
        return self._start(worker.recipe, wait)

    def _start(self, recipe: WorkerRecipe, wait: bool) -> Worker:
        with self._lock:
            name = f"{recipe.prefix}{len(self.workers)}"
            worker = Worker(name, recipe, self._process_env(recipe.env), self.root / f"{name}.log")
            self.workers.append(worker)
        return worker.start(wait)

    def start_beat(self) -> Service:
        """``celery beat`` (the schedules and periodic tasks), returned once it started."""
        argv = [*CELERY, "beat", "--loglevel=INFO", "-s", str(self.root / "beat-schedule")]
        ready = log_says(b"Starting...")
        self.beat = Service("beat", argv, self.root / "beat.log", ready, self._process_env({}))
        self.beat.start()
        self.beat.await_ready()
        return self.beat

    def _process_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {"PYTHONPATH": _import_path(), **self.env(), **env}

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_EVERY):
            for worker in list(self.workers):
                if not worker.replaced and worker.died():
                    with contextlib.suppress(Exception):
                        self.replace(worker)

    # -- the end ------------------------------------------------------------------------------

    def close(self, keep: bool = False, worker_timeout: float = STOP_TIMEOUT) -> None:
        """Stop everything, give this process its environment back, drop what the cluster
        made on shared servers; ``keep``: leave its directory (logs, own servers' data)."""
        self._stop.set()
        if self._supervisor is not None and self._supervisor.is_alive():
            self._supervisor.join(90)
        for worker in self.workers:
            worker.stopped = True
        started = [w.service for w in self.workers if w.service.proc is not None]
        stop_services([*started, *([self.beat] if self.beat else [])], worker_timeout)
        self.deactivate()
        if self.shared is not None:
            self._drop_shared()
        for server in (self.broker, self.redis, self.postgres):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def _drop_shared(self) -> None:
        if self.database_url:
            with contextlib.suppress(Exception):
                drop_database(self.database_url)
        for url in {self.redis_url, self.broker_url} - {""}:
            with contextlib.suppress(Exception):
                release_redis_db(url)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def environ_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The ``ORCHESTRATOR_*`` settings of ``environ`` but the server URLs (the cluster's own):
    what a cluster passes on from the environment it was started in."""
    return {k: v for k, v in environ.items() if k.startswith(PREFIX) and k not in URL_VARS}


def _configured_servers(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(Redis URL, PostgreSQL URL) named by ``environ``, when it names both."""
    redis_url = environ.get("ORCHESTRATOR_REDIS_URL") or environ.get("ORCHESTRATOR_BROKER_URL")
    database_url = environ.get("ORCHESTRATOR_DATABASE_URL")
    return (redis_url, database_url) if redis_url and database_url else None


def _import_path() -> str:
    """``PYTHONPATH`` for the cluster's processes: the directories this process imports from
    (the current one, and those pytest or the caller added), so they import the test's modules
    (its task modules among them) as the test does."""
    interpreter = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    found = [str(Path.cwd()), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and not any(path.is_relative_to(p) for p in interpreter):
            found.append(str(path))
    return os.pathsep.join(dict.fromkeys(p for p in found if p))


def _set_orchestrator_environ(values: Mapping[str, str]) -> None:
    """Make ``values`` the only ``ORCHESTRATOR_*`` variables; orchestrator re-reads them."""
    for key in [k for k in os.environ if k.startswith(PREFIX)]:
        del os.environ[key]
    os.environ.update(values)
    reset_default_app()
    get_settings.cache_clear()
