"""``orchestrator dev``: one command brings up the stack, runs workflows, and Ctrl-C leaves nothing.

The dev process runs with no ORCHESTRATOR_* variables, so it starts embedded Redis and
PostgreSQL; another process uses the servers through the ``export`` lines it prints (or the
``env`` file it writes), and Flower's API (with the printed credentials) shows the run's tasks.
Restarted, dev keeps its addresses; with ``--reload`` it restarts the worker when a task module
changes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dev.supervision import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
READY = "press Ctrl-C to stop everything"
MAIN = "import sys; from orchestrator.cli import main; sys.exit(main())"
CLIENT = """
import json
from orchestrator import run_workflow
run = run_workflow("etl", inputs={"source": "s3://bucket/dev-test"})
output = run.wait(timeout=60)
print(json.dumps({"run": run.id, "output": output,
                  "tasks": {s.celery_task_id: s.task for s in run.steps()}}))
"""


def clean_env() -> dict[str, str]:
    """This environment without any ORCHESTRATOR_* variable (the session fixtures set some)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}


class DevProcess:
    """``orchestrator dev`` as a subprocess, its output read line by line."""

    def __init__(
        self, data_dir: Path, *options: str, cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, "dev", "--data-dir", str(data_dir), *options],
            cwd=cwd,
            env={**clean_env(), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.pids: dict[int, str] = {}  # what it started: pid -> start time
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} in {timeout}s:\n{self.output()}") from None
            if line is None:
                raise AssertionError(f"exited before {text!r}:\n{self.output()}")
            self.lines.append(line)

    def output(self) -> str:
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return "\n".join(self.lines)

    def exports(self) -> dict[str, str]:
        found = (re.match(r"\s*export (ORCHESTRATOR_\w+)=(.*)", line) for line in self.lines)
        return {m[1]: shlex.split(m[2])[0] for m in found if m}

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in still_running(self.pids):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)

    def flower(self) -> tuple[str, str, str]:
        pattern = r"\s*Flower\s+(http://\S+)\s+user (\S+)\s+password (\S+)"
        found = [m for m in (re.match(pattern, line) for line in self.lines) if m]
        assert found, f"no Flower line:\n{self.output()}"
        return found[0][1], found[0][2], found[0][3]


def _stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name."""
    found: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            found[int(stat.parent.name)] = stat.read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
    return found


def started_by(root: int) -> dict[int, str]:
    """pid -> start time of every descendant of ``root`` and every process in their sessions."""
    stats = _stats()
    family, todo = set(), [root]
    while todo:
        parent = todo.pop()
        kids = [pid for pid, f in stats.items() if f[1] == str(parent) and pid not in family]
        family.update(kids)
        todo.extend(kids)
    sessions = {stats[pid][3] for pid in family}
    family |= {pid for pid, f in stats.items() if f[3] in sessions and f[3] != str(os.getsid(0))}
    return {pid: stats[pid][19] for pid in family if pid in stats}


def still_running(pids: dict[int, str]) -> list[int]:
    """Those of ``pids`` alive now (same start time, not a zombie)."""
    stats = _stats()
    return [
        pid
        for pid, start in pids.items()
        if pid in stats and stats[pid][19] == start and stats[pid][0] != "Z"
    ]


def command_lines(pids: dict[int, str]) -> str:
    text = []
    for pid in pids:
        try:
            text.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return "\n".join(text)


def flower_get(url: str, auth: tuple[str, str] | None = None) -> Any:
    request = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def await_flower_tasks(url: str, auth: tuple[str, str], ids: set[str]) -> dict[str, Any]:
    """Flower's view of ``ids`` once it has seen every one succeed (events arrive async)."""
    deadline = time.monotonic() + 20
    while True:
        tasks = flower_get(f"{url}/api/tasks", auth)
        mine = {tid: info for tid, info in tasks.items() if tid in ids}
        if all(mine.get(tid, {}).get("state") == "SUCCESS" for tid in ids):
            return mine
        if time.monotonic() > deadline:
            raise AssertionError(f"Flower shows {mine} of {ids}")
        time.sleep(0.5)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's 0700 temp root: as root, PostgreSQL runs as its own account."""
    path = Path(tempfile.mkdtemp(prefix="orch-dev-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_dev(data_dir: Path) -> Iterator[Callable[..., DevProcess]]:
    """Factory: `orchestrator dev` with options, once ready; whatever is left is killed after."""
    started: list[DevProcess] = []

    def start(*options: str, **where: Any) -> DevProcess:
        dev = DevProcess(data_dir, *options, **where)
        started.append(dev)
        dev.wait_for(READY, timeout=120)
        dev.pids = started_by(dev.proc.pid)
        return dev

    yield start
    for dev in started:
        dev.kill_all()


def run_client(env: dict[str, str], code: str = CLIENT, cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``etl`` from another process; its run id, output and {celery task id: task}."""
    client = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert client.returncode == 0, client.stderr
    return dict(json.loads(client.stdout.strip().splitlines()[-1]))


def test_dev_runs_a_workflow_and_ctrl_c_stops_everything(
    start_dev: Callable[..., DevProcess], data_dir: Path
) -> None:
    # Given `orchestrator dev` with no ORCHESTRATOR_* URLs, ready
    dev = start_dev()
    url, user, password = dev.flower()
    assert dev.exports()["ORCHESTRATOR_FLOWER_URL"] == url
    assert (data_dir / "flower-credentials").stat().st_mode & 0o777 == 0o600

    # When another process runs a workflow on the servers named by the export lines
    result = run_client(dev.exports())

    # Then it succeeds, and Flower (behind the printed credentials) shows its tasks
    assert result["output"].startswith("loaded ")
    with pytest.raises(urllib.error.HTTPError) as refused:
        flower_get(f"{url}/api/tasks")
    assert refused.value.code == 401
    seen = await_flower_tasks(url, (user, password), set(result["tasks"]))
    assert {tid: info["name"] for tid, info in seen.items()} == result["tasks"]

    # When it gets Ctrl-C (SIGINT)
    dev.pids.update(started_by(dev.proc.pid))
    commands = command_lines(dev.pids)
    for expected in ("redis-server", "postgres", " worker ", " beat ", " flower "):
        assert expected in commands, commands
    dev.proc.send_signal(signal.SIGINT)

    # Then it exits 0 within 30 s, and no process it started is left
    assert dev.proc.wait(timeout=30) == 0, dev.output()
    assert "stopped" in dev.output()
    assert still_running(dev.pids) == [], command_lines(dev.pids)


def test_dev_stops_everything_when_a_child_dies(start_dev: Callable[..., DevProcess]) -> None:
    # Given `orchestrator dev` with a worker and beat, ready
    dev = start_dev("--no-flower")
    stats = _stats()
    worker = next(
        pid
        for pid in dev.pids
        if stats[pid][1] == str(dev.proc.pid) and " worker " in command_lines({pid: ""})
    )

    # When the worker dies (its pool children are orphaned)
    os.kill(worker, signal.SIGKILL)

    # Then dev shows the end of the worker's log, stops everything and exits 1
    assert dev.proc.wait(timeout=30) == 1, dev.output()
    output = dev.output()
    assert "worker exited with code -9" in output
    assert "worker.log ---" in output and " ready." in output
    assert still_running(dev.pids) == [], command_lines(dev.pids)


def stop(dev: DevProcess) -> None:
    """Ctrl-C, and dev stops everything it started."""
    dev.pids.update(started_by(dev.proc.pid))
    dev.proc.send_signal(signal.SIGINT)
    assert dev.proc.wait(timeout=30) == 0, dev.output()
    assert still_running(dev.pids) == [], command_lines(dev.pids)


def test_dev_restarted_keeps_its_addresses(
    start_dev: Callable[..., DevProcess], data_dir: Path
) -> None:
    # Given `orchestrator dev`, started, stopped and started again twice (its first ports
    # noted beforehand: on a shared machine 5555, 6379 or 5432 may be taken between two starts)
    for noted in ("flower-port", "redis/port", "postgres/port"):
        (data_dir / noted).parent.mkdir(exist_ok=True)
        (data_dir / noted).write_text(f"{free_port()}\n")
    first = start_dev("--no-beat")
    exports = first.exports()
    assert {"ORCHESTRATOR_TASK_MODULES", "ORCHESTRATOR_WORKFLOWS_PATH"} <= set(exports)
    assert Path(exports["ORCHESTRATOR_WORKFLOWS_PATH"]).is_absolute()
    assert f'export PATH={Path(sys.executable).parent}:"$PATH"' in first.output()
    assert "the CLI: " in first.output()
    stop(first)
    second = start_dev("--no-beat")
    # Then each start has the same addresses (servers and Flower) as the first
    assert second.exports() == exports, (exports, second.output())
    stop(second)
    third = start_dev("--no-beat")
    assert third.exports() == exports and "addresses changed" not in third.output()

    # When another process uses the first start's exports / Then its run works
    assert run_client(exports)["output"].startswith("loaded ")
    # And a shell that sources the env file reaches the servers and `orchestrator` on PATH
    shell = subprocess.run(
        ["bash", "-c", f"source {data_dir / 'env'} && orchestrator runs -n 1 --json"],
        cwd="/",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0 and json.loads(shell.stdout)[0]["workflow"] == "etl", shell
    stop(third)


TASKS_V1 = """
from orchestrator import task


@task
def version() -> str:
    return "v1"
"""
HELLO = "name: hello\nsteps: [{id: v, task: fh_reload_tasks.version}]\n"
RUN_HELLO = """
import json
from orchestrator import run_workflow
print(json.dumps({"output": run_workflow("hello").wait(timeout=60)}))
"""


def test_dev_reload_restarts_the_worker_when_a_task_module_changes(
    start_dev: Callable[..., DevProcess], data_dir: Path, tmp_path: Path
) -> None:
    # Given a project of its own (a task module and a workflow) under `orchestrator dev --reload`
    project = tmp_path / "project"
    (project / "workflows").mkdir(parents=True)
    module = project / "fh_reload_tasks.py"
    module.write_text(TASKS_V1)
    (project / "workflows" / "hello.yaml").write_text(HELLO)
    settings = {"ORCHESTRATOR_TASK_MODULES": "fh_reload_tasks"}
    settings["ORCHESTRATOR_WORKFLOWS_PATH"] = "workflows"
    dev = start_dev("--reload", "--no-beat", "--no-flower", cwd=project, env=settings)
    exports = dev.exports()
    assert run_client(exports, RUN_HELLO, project)["output"] == "v1"

    # When the module is saved with a syntax error
    module.write_text(TASKS_V1.replace("-> str:", "-> str"))
    # Then the worker's failure is shown and dev keeps running, waiting for the next change
    dev.wait_for("worker starts again when a file changes", timeout=60)
    assert dev.proc.poll() is None and "SyntaxError" in dev.output()

    # When it is fixed with a new version
    module.write_text(TASKS_V1.replace('"v1"', '"v2"'))
    # Then the worker restarts and runs the new code
    dev.wait_for("worker is ready (reloaded)", timeout=60)
    assert run_client(exports, RUN_HELLO, project)["output"] == "v2"
    stop(dev)
