"""``celery -A orchestrator.worker worker`` processes of a test cluster.

Each worker is the leader of a process group of its own (``orchestrator.dev.supervision``), so a
test can kill its main process, one pool child, or all of it, and stopping it leaves nothing
behind. Its output goes to a log file, which also tells when it is ready.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.dev.embedded import children
from orchestrator.dev.server import worker_argv
from orchestrator.dev.supervision import (
    KILL_TIMEOUT,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    Service,
    log_says,
)


@dataclass(frozen=True)
class WorkerRecipe:
    """How a worker was started, to start another like it (a replacement)."""

    prefix: str = "w"
    concurrency: int = 2
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()


class Worker:
    """One worker node ``<name>@<host>``; ``env`` is laid over this process's environment."""

    def __init__(self, name: str, recipe: WorkerRecipe, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.recipe = recipe
        argv = worker_argv(name, "-c", str(recipe.concurrency), *recipe.args)
        self.service = Service(name, argv, log, log_says(b" ready."), env)
        self.stopped = False  # stopped or killed on purpose: not restarted, not "died"
        self.replaced = False  # a replacement was started for it

    @property
    def log(self) -> Path:
        return self.service.log

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.service.proc is not None, f"worker {self.name} was not started"
        return self.service.proc

    @property
    def pid(self) -> int:
        """The main process (also the process group id)."""
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.service.proc is not None and self.proc.poll() is None

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> Worker:
        """Start it; with ``wait``, return once it consumes (else raise with its log's end)."""
        self.service.start()
        if wait:
            self.await_ready(timeout)
        return self

    def await_ready(self, timeout: float = READY_TIMEOUT) -> Worker:
        self.service.await_ready(timeout)
        return self

    def pool(self) -> list[int]:
        """The pool processes (prefork children) of the main process."""
        return children(self.pid) if self.running else []

    def kill(self, group: bool = True) -> None:
        """``kill -9`` of the main process and its pool (``group=False``: the main process only,
        as the OOM killer would, orphaning the pool children)."""
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(KILL_TIMEOUT * 3)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Warm shutdown (SIGTERM: running steps finish) within ``timeout``, then SIGKILL of
        whatever is left of the group; the main process's exit code (None: never started)."""
        self.stopped = True
        if self.service.proc is None:
            return None
        self.service.terminate()
        self.service.finish(time.monotonic() + timeout)
        return self.proc.returncode

    def output(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def tail(self, lines: int = 40) -> str:
        return self.service.tail(lines)

    def died(self) -> str | None:
        """Why it exited by itself (not stopped or killed on purpose), or None if it did not."""
        if self.stopped or self.service.proc is None or self.proc.poll() is None:
            return None
        lines = self.output().splitlines()
        fatal = [ln for ln in lines if "CRITICAL" in ln or "Unrecoverable" in ln]
        return (fatal[-1] if fatal else f"exit code {self.proc.returncode}")[:300]
