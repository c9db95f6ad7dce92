"""Real servers and real ``celery worker`` processes for the integration tests.

With ``ORCHESTRATOR_BROKER_URL``/``ORCHESTRATOR_REDIS_URL`` and ``ORCHESTRATOR_DATABASE_URL`` set,
the tests use those servers, in a database and Redis db number of their own that they drop
afterwards; without them they start embedded Redis and PostgreSQL (``orchestrator.dev.embedded``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from orchestrator.dev.server import worker_argv

ROOT = Path(__file__).resolve().parents[2]
SESSION = uuid.uuid4().hex


def _own_redis_db(base: str) -> str:
    """A Redis db number no other test session holds (13 first, then 12, 11, ...).

    ``ORCHESTRATOR_TEST_REDIS_DB`` pins one. The db is held by a key that expires, so a killed
    session frees it within an hour.
    """
    pinned = os.environ.get("ORCHESTRATOR_TEST_REDIS_DB")
    for db in [int(pinned)] if pinned else range(13, 0, -1):
        url = urlunsplit(urlsplit(base)._replace(path=f"/{db}"))
        if redis.Redis.from_url(url).set("orchestrator:test-session", SESSION, nx=True, ex=3600):
            return url
    raise RuntimeError("every Redis db from 1 to 13 is held by another test session")


TASK_MODULES = "tasks,tests.integration.workload"


def _base_urls(tmp: Path) -> tuple[str, str, Any]:
    redis_url = os.environ.get("ORCHESTRATOR_REDIS_URL") or os.environ.get(
        "ORCHESTRATOR_BROKER_URL"
    )
    db_url = os.environ.get("ORCHESTRATOR_DATABASE_URL")
    if redis_url and db_url:
        return redis_url, db_url, None
    from orchestrator.dev.embedded import start_embedded

    # outside pytest's 0700 temp root: PostgreSQL runs as its own account when we are root
    data = Path(tempfile.mkdtemp(prefix="orchestrator-test-"))
    data.chmod(0o755)
    servers = start_embedded(data / "embedded")
    return servers.redis_url, servers.database_url, servers


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The ORCHESTRATOR_* environment of this test session (own database, own Redis db)."""
    redis_base, db_base, embedded = _base_urls(tmp_path_factory.mktemp("servers"))
    redis_url = _own_redis_db(redis_base)
    db_name = f"orchestrator_test_{uuid.uuid4().hex[:8]}"
    db_url = make_url(db_base).set(database=db_name).render_as_string(hide_password=False)
    env = {
        "ORCHESTRATOR_BROKER_URL": redis_url,
        "ORCHESTRATOR_RESULT_BACKEND": redis_url,
        "ORCHESTRATOR_REDIS_URL": redis_url,
        "ORCHESTRATOR_DATABASE_URL": db_url,
        "ORCHESTRATOR_TASK_MODULES": TASK_MODULES,
        "ORCHESTRATOR_WORKFLOWS_PATH": str(ROOT / "config" / "workflows"),
        "ORCHESTRATOR_TEST_PUBLISH_LOG": redis_url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_orchestrator()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.set("orchestrator:test-session", SESSION, ex=3600)
    from orchestrator.settings import get_settings
    from orchestrator.stores.postgres.migrate import upgrade

    upgrade(get_settings().sqlalchemy_url)
    yield env
    _reset_orchestrator()
    redis.Redis.from_url(redis_url).flushdb()
    _drop_database(db_base, db_name)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if embedded is not None:
        embedded.stop()


def _reset_orchestrator() -> None:
    from orchestrator.app import reset_default_app
    from orchestrator.settings import get_settings

    reset_default_app()
    get_settings.cache_clear()


def _drop_database(base: str, name: str) -> None:
    url = make_url(base).set(database="postgres", drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class WorkerProcess:
    """A real ``celery -A orchestrator.worker worker`` subprocess."""

    def __init__(self, env: dict[str, str], name: str, args: list[str], log: Path) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            worker_argv(name, *args),
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._await_ready()

    def _await_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b" ready." in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def start_worker(
    servers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a worker with extra environment and arguments; all are stopped at the end."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("workers")

    def start(
        name: str = "w", args: list[str] | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(
            {**servers, **(env or {})},
            f"{name}{len(started)}",
            args or ["-c", "2"],
            logs / f"{name}{len(started)}.log",
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    """One shared two-process prefork worker."""
    return start_worker("shared")


@pytest.fixture
def published(servers: dict[str, str]) -> Callable[[], list[tuple[str, int]]]:
    """Messages published since the test began: (task name, size in bytes)."""
    import json

    client = redis.Redis.from_url(servers["ORCHESTRATOR_REDIS_URL"])
    client.delete("test:published")

    def read() -> list[tuple[str, int]]:
        return [tuple(json.loads(x)) for x in client.lrange("test:published", 0, -1)]

    return read
