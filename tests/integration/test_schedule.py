"""Scheduled runs and retention end to end: two real `celery beat` processes and real workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from orchestrator import RunNotFound, Workflow, get_run, list_runs
from orchestrator.app import default_services
from orchestrator.ops.periodic import install
from orchestrator.ops.schedule import CLEANUP_TASK
from orchestrator.records import RunRecord
from tests.integration import workload
from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration
TERMINAL = ("succeeded", "failed", "cancelled")


class BeatProcess:
    """A real ``celery -A orchestrator.worker beat`` subprocess with its own schedule file."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        home.mkdir(parents=True)
        self.log_path = home / "beat.log"
        self._log = self.log_path.open("wb")
        self._terminated = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "orchestrator.worker", "beat",
             "-s", str(home / "schedule"), "--max-interval", "1", "--loglevel", "INFO"],
            cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def await_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"beat: Starting" in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"beat did not start:\n{self.output()[-3000:]}")

    def terminate(self) -> None:
        """Ask beat to stop (once: a second SIGTERM would cut its last schedule sync short)."""
        if self.proc.poll() is None and not self._terminated:
            os.kill(self.proc.pid, signal.SIGTERM)
            self._terminated = True

    def stop(self) -> None:
        self.terminate()
        if self.proc.poll() is None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def sends(self, workflow: str) -> int:
        return self.output().count(f"Sending due task orchestrator:schedule:{workflow} ")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_beats(
    servers: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[Path, int], list[BeatProcess]]]:
    """Factory: start ``n`` beat processes loading the workflows in a directory."""
    started: list[BeatProcess] = []

    def start(workflows: Path, n: int) -> list[BeatProcess]:
        env = {**servers, "ORCHESTRATOR_WORKFLOWS_PATH": str(workflows)}
        beats = [BeatProcess(env, tmp_path / f"beat{len(started) + i}") for i in range(n)]
        started.extend(beats)
        for beat in beats:
            beat.await_ready()
        return beats

    yield start
    for beat in started:
        beat.stop()


def _write_workflow(
    directory: Path, name: str, schedule: dict[str, Any], step: dict[str, Any]
) -> Path:
    directory.mkdir(exist_ok=True)
    doc = {"name": name, "schedule": schedule, "steps": [{"id": "only", **step}]}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return directory


def _settled_runs(workflow: str, quiet: float = 2.0, timeout: float = 40.0) -> list[RunRecord]:
    """The workflow's runs, oldest first, once every run ended and no new one came for a while."""
    deadline, seen, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        runs = list_runs(workflow=workflow, limit=1000)
        if len(runs) != seen:
            seen, since = len(runs), time.monotonic()
        elif all(r.status in TERMINAL for r in runs) and time.monotonic() - since >= quiet:
            return sorted(runs, key=lambda r: r.created_at)
        time.sleep(0.2)
    raise AssertionError(f"runs of {workflow} did not settle: {[r.status for r in runs]}")


def _stop(beats: list[BeatProcess]) -> float:
    """Stop the beats at the same moment; that moment (``time.monotonic()``)."""
    for beat in beats:
        beat.terminate()
    at = time.monotonic()
    for beat in beats:
        beat.stop()
    return at


def _fire_time(run: RunRecord) -> datetime:
    assert run.idempotency_key is not None
    prefix = f"schedule:{run.workflow}:"
    assert run.idempotency_key.startswith(prefix)
    return datetime.fromisoformat(run.idempotency_key[len(prefix) :])


def test_two_beats_start_one_run_per_fire_time(
    worker: Any, start_beats: Callable[[Path, int], list[BeatProcess]], tmp_path: Path
) -> None:
    # Given a workflow scheduled every second with inputs, loaded by two beat processes
    name = f"tick_{uuid.uuid4().hex[:8]}"
    workflows = _write_workflow(
        tmp_path / "workflows", name,
        {"every": 1, "inputs": {"x": 1, "y": 2}, "overlap": "allow"},
        {"task": "tests.integration.workload.add"},
    )  # fmt: skip
    # When both beats run together for about five seconds
    launched = time.monotonic()
    beats = start_beats(workflows, 2)
    together = time.monotonic()
    time.sleep(5)
    stopped = _stop(beats)
    runs = _settled_runs(name)
    # Then both beats sent every slot, but each fire time has exactly one run
    sends = [beat.sends(name) for beat in beats]
    assert min(sends) >= 4, sends
    keys = [r.idempotency_key for r in runs]
    assert len(set(keys)) == len(keys)
    # and the number of runs is about the elapsed seconds, not double: each beat's sends are
    # distinct slots, so runs >= the sends of either beat, and the other beat adds a slot or two
    # at most (it started or stopped a moment apart)
    window, upper = stopped - together, stopped - launched
    assert max(sends) <= len(runs) <= max(sends) + 2 < sum(sends), (len(runs), sends)
    assert window - 1.5 <= len(runs) <= upper + 1, (len(runs), window, upper)
    fire_times = [_fire_time(r) for r in runs]
    assert all(t.microsecond == 0 for t in fire_times)
    gaps = [(b - a).total_seconds() for a, b in zip(fire_times, fire_times[1:], strict=False)]
    assert all(1 <= gap <= 2 for gap in gaps), gaps
    # and every run was started by the schedule, with its inputs
    assert {r.trigger for r in runs} == {"schedule"}
    assert all(r.status == "succeeded" and r.output == 3 for r in runs)
    assert all(r.inputs == {"x": 1, "y": 2} for r in runs)


def test_overlap_skip_starts_nothing_while_the_previous_run_is_going(
    worker: Any, start_beats: Callable[[Path, int], list[BeatProcess]], tmp_path: Path
) -> None:
    # Given a 2.5 s workflow scheduled every second with overlap: skip (the default)
    name = f"slow_{uuid.uuid4().hex[:8]}"
    workflows = _write_workflow(
        tmp_path / "workflows", name, {"every": 1},
        {"task": "tests.integration.workload.sleepy", "kwargs": {"seconds": 2.5}},
    )  # fmt: skip
    # When two beats fire it for about seven seconds
    beats = start_beats(workflows, 2)
    time.sleep(7)
    _stop(beats)
    runs = _settled_runs(name)
    # Then no two scheduled runs overlapped in time, and the slots in between were skipped
    assert 2 <= len(runs) <= 4, [(r.created_at, r.finished_at) for r in runs]
    for previous, following in zip(runs, runs[1:], strict=False):
        assert previous.finished_at is not None
        assert following.created_at >= previous.finished_at
    assert {r.trigger for r in runs} == {"schedule"} and {r.status for r in runs} == {"succeeded"}
    assert f"schedule {name} " in worker.output() and "(overlap: skip)" in worker.output()


def test_cleanup_deletes_only_finished_runs_past_retention(worker: Any) -> None:
    # Given four finished runs; two made 40 days old, one of those marked paused (unfinished)
    wf = Workflow(f"retention_{uuid.uuid4().hex[:8]}")
    wf.step("a", workload.noop)
    wf.step("b", workload.noop, after="a")
    handles = [wf.run() for _ in range(4)]
    for handle in handles:
        handle.wait(timeout=30)
        # finished in history too (wait() returns on the worker's word, history a commit later)
        assert handle.status() == "succeeded"
    old_done, old_done2, old_paused, recent = (h.id for h in handles)
    engine = default_services().history.engine
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE workflow_runs SET created_at = :at WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"at": datetime.now().astimezone() - timedelta(days=40),
             "ids": [old_done, old_done2, old_paused]},
        )  # fmt: skip
        conn.execute(text("UPDATE workflow_runs SET status = 'paused' WHERE id = :id"),
                     {"id": old_paused})  # fmt: skip
    # When the cleanup runs with 30 days of retention, one run per batch
    app = default_services().app
    install(app, default_services().settings)  # beat's tasks, as orchestrator.worker registers them
    task = app.tasks[CLEANUP_TASK]
    assert task(days=0) == 0
    deleted = task(days=30, batch_size=1)
    # Then only the old finished runs are gone, with their steps and attempts
    assert deleted == 2
    for gone in (old_done, old_done2):
        with pytest.raises(RunNotFound):
            get_run(gone)
    assert get_run(old_paused).status() == "paused" and get_run(recent).status() == "succeeded"
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM task_runs WHERE run_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [old_done, old_done2]},
        ).scalar_one()
        orphans = conn.execute(
            text("SELECT count(*) FROM task_attempts a LEFT JOIN task_runs t "
                 "ON t.id = a.task_run_id WHERE t.id IS NULL")
        ).scalar_one()  # fmt: skip
    assert left == 0 and orphans == 0
    assert len(get_run(recent).steps()) == 2
