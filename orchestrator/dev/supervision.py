"""Child processes in process groups of their own: start, wait until ready, stop for sure.

A :class:`Service` is a command whose output goes to a log file; it is started in a new session
(so a terminal's Ctrl-C reaches only its supervisor), stopped with SIGTERM to its leader, and after
a bounded wait its whole process group is SIGKILLed, so nothing it started is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from orchestrator.errors import OrchestratorError

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0  # a worker's warm shutdown lets running steps finish
KILL_TIMEOUT = 5.0


class SupervisionError(OrchestratorError):
    """A supervised process did not start, or died."""


@dataclass
class Service:
    """A supervised child: a process group of its own, its output in ``log``."""

    name: str
    argv: list[str]
    log: Path
    ready: Callable[[Service], bool]
    env: dict[str, str] = field(default_factory=dict)
    proc: Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = Popen(
                self.argv,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def await_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.proc is not None, f"{self.name} was not started"
        deadline = time.monotonic() + timeout
        while not self.ready(self):
            code = self.proc.poll()
            if code is not None:
                raise SupervisionError(
                    f"{self.name} exited with code {code} while starting\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise SupervisionError(
                    f"{self.name} was not ready after {timeout:g}s\n{self.tail()}"
                )
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        return log_tail(self.log, lines)

    def terminate(self) -> None:
        """SIGTERM to the group leader only: a worker stops its pool itself (warm shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def finish(self, deadline: float) -> None:
        """Wait for the leader until ``deadline``; then SIGKILL whatever is left of the group."""
        if self.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        if self.proc.poll() is None or group_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(KILL_TIMEOUT)
            _await_gone(self.proc.pid, KILL_TIMEOUT)


def stop_services(services: list[Service], timeout: float = STOP_TIMEOUT) -> None:
    """Stop ``services`` (last started first), all within ``timeout`` plus the SIGKILL wait."""
    for service in reversed(services):
        service.terminate()
    deadline = time.monotonic() + timeout
    for service in reversed(services):
        service.finish(deadline)


def log_says(marker: bytes) -> Callable[[Service], bool]:
    """Ready once ``marker`` appears in the service's log."""

    def ready(service: Service) -> bool:
        with contextlib.suppress(OSError):
            return marker in service.log.read_bytes()
        return False

    return ready


def http_ok(url: str) -> Callable[[Service], bool]:
    """Ready once ``url`` answers 200."""

    def ready(_service: Service) -> bool:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
        return False

    return ready


def log_tail(log: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
        return "\n".join([f"--- end of {log} ---", *text, "---"])
    return f"(no log at {log})"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, from Linux ``/proc``."""
    if not Path("/proc/self/stat").exists():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, 0)
            return [pgid]
        return []
    return [pid for pid, stat in _proc_stats() if stat[0] != "Z" and stat[2] == str(pgid)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; zombies count as gone and are not reaped here."""
    if Path("/proc/self/stat").exists():
        stats = dict(_proc_stats([pid]))
        return pid in stats and stats[pid][0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user
        return True
    return True


def _proc_stats(pids: list[int] | None = None) -> Iterator[tuple[int, list[str]]]:
    """(pid, [state, ppid, pgrp, session, ...]) read from ``/proc/<pid>/stat``."""
    paths = [Path(f"/proc/{pid}") for pid in pids] if pids else Path("/proc").glob("[0-9]*")
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            yield int(path.name), (path / "stat").read_text().rpartition(")")[2].split()


def _await_gone(pgid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM both raise ``KeyboardInterrupt`` in the main thread."""

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while stopping, so a second Ctrl-C leaves nothing behind."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def free_port(*preferred: int, host: str = "127.0.0.1") -> int:
    """The first of ``preferred`` that nothing listens on at ``host``, else a free port."""
    for port in (*preferred, 0):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):
                sock.bind((host, port))
                return int(sock.getsockname()[1])
    raise SupervisionError(f"no free TCP port on {host}")


def kept_port(path: Path, preferred: int = 0) -> int:
    """The port noted in ``path`` when it is free (so a restart keeps its address), else
    ``preferred`` when free, else any free port; the choice is noted in ``path``."""
    noted = 0
    with contextlib.suppress(OSError, ValueError):
        noted = int(path.read_text().strip())
    port = free_port(*(p for p in (noted, preferred) if p))
    if port != noted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{port}\n")
    return port
