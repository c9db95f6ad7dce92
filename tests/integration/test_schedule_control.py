"""Schedule control end to end: catch-up after a (simulated) beat downtime, backfill, pause and
resume, with real `celery beat` processes, real workers and the state in PostgreSQL."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from orchestrator import Schedule, Workflow
from orchestrator.app import default_services
from orchestrator.cli import main
from orchestrator.core import registry
from orchestrator.ops.periodic import install
from orchestrator.ops.schedule import FIRE_TASK, previous_fire
from tests.integration import workload
from tests.integration.conftest import ROOT
from tests.integration.test_schedule import (  # noqa: F401  (start_beats: the fixture)
    BeatProcess,
    _write_workflow,
    start_beats,
)

pytestmark = pytest.mark.integration
HOUR = 3600
HOUR_DELTA = timedelta(hours=1)


def _runs(workflow: str) -> list[tuple[datetime, datetime, str]]:
    """(fire time, created_at, status) of the workflow's runs, by fire time, from PostgreSQL."""
    with default_services().history.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            text("SELECT idempotency_key, created_at, status FROM workflow_runs "
                 "WHERE workflow = :w ORDER BY idempotency_key"),
            {"w": workflow},
        ).all()  # fmt: skip
    prefix = f"schedule:{workflow}:"
    return [(datetime.fromisoformat(k[len(prefix) :]), at, s) for k, at, s in rows]


def _wait(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _settled(workflow: str, count: int | None = None) -> list[tuple[datetime, datetime, str]]:
    """The workflow's runs once there are ``count`` (or any) and all succeeded."""

    def done() -> list[tuple[datetime, datetime, str]] | None:
        runs = _runs(workflow)
        ok = runs and (count is None or len(runs) == count)
        return runs if ok and all(status == "succeeded" for *_, status in runs) else None

    found: list[tuple[datetime, datetime, str]] = _wait(f"{workflow}'s runs ended", done)
    return found


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_catchup_modes_when_beat_comes_back_after_a_downtime(
    worker: Any,
    start_beats: Callable[[Path, int], list[BeatProcess]],  # noqa: F811
    tmp_path: Path,
) -> None:
    # Given three hourly workflows, catchup latest, all and none, whose last fire time handled
    # was five hours ago (beat was down since: the record is set back instead of sleeping)
    tag = uuid.uuid4().hex[:6]
    names = {mode: f"catchup_{mode}_{tag}" for mode in ("latest", "all", "none")}
    workflows = tmp_path / "workflows"
    for mode, name in names.items():
        schedule = {"every": HOUR, "catchup": mode, "inputs": {"x": 1, "y": 2}}
        _write_workflow(workflows, name, schedule, {"task": "tests.integration.workload.add"})
    slot = previous_fire(None, HOUR, datetime.now(UTC))
    assert slot is not None
    history = default_services().history
    for name in names.values():
        history.record_fire(name, slot - timedelta(hours=5))
    # When beat starts: its start-up check fires each schedule once
    start_beats(workflows, 1)

    def moved(name: str) -> datetime | None:
        last = history.schedule_state(name).last_fire_time
        return last if last is not None and last >= slot else None

    handled: dict[str, datetime] = {}
    for mode, name in names.items():
        handled[mode] = _wait(f"{name}'s start-up check", functools.partial(moved, name))
    # Then (F = the slot beat came back in): latest started F only, all the five missed fire
    # times F-4h..F (more if an hour began meanwhile), and none nothing; each recorded F
    fire = handled["latest"]
    assert set(handled.values()) == {fire} and fire >= slot
    expected = {
        "latest": [fire],
        "all": [slot + timedelta(hours=h) for h in range(-4, 1 + (fire - slot) // HOUR_DELTA)],
        "none": [],
    }
    for mode, name in names.items():
        runs = _settled(name) if expected[mode] else _runs(name)
        assert [t for t, *_ in runs if t <= fire] == expected[mode], mode
    assert "fire time(s) missed since" in worker.output()


def test_backfill_twice_starts_each_fire_time_once(
    worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a workflow scheduled every 10 minutes, one fire time of which beat already fired
    name = f"backfill_{uuid.uuid4().hex[:8]}"
    wf = Workflow(name, schedule=Schedule(every=600, inputs={"x": 2, "y": 3}))
    wf.step("add", workload.add)
    spec = wf.spec
    app = default_services().app
    install(app, default_services().settings)
    beat = app.tasks[FIRE_TASK](
        workflow=name, fire_time="2026-03-01T10:20:00+00:00", overlap="allow",
        inputs={"x": 2, "y": 3}, spec=spec.model_dump(mode="json"),
    )  # fmt: skip
    assert beat["run_id"]
    # When the range 10:00..11:00 is backfilled, twice
    argv = [
        "schedules",
        "backfill",
        name,
        "--from",
        "2026-03-01T10:00Z",
        "--to",
        "2026-03-01T11:00Z",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert main(argv) == 0
    second = capsys.readouterr().out
    # Then each of the seven fire times has exactly one run (counted in PostgreSQL)
    assert "7 fire time(s)" in first and "6 started, 1 already there" in first
    assert "0 started, 7 already there" in second
    runs = _settled(name, 7)
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert [t for t, *_ in runs] == [start + timedelta(minutes=10 * i) for i in range(7)]
    with default_services().history.engine.connect() as conn:  # type: ignore[attr-defined]
        total, triggers = conn.execute(
            text("SELECT count(*), array_agg(DISTINCT trigger) FROM workflow_runs "
                 "WHERE workflow = :w"), {"w": name},
        ).one()  # fmt: skip
    assert total == 7 and triggers == ["schedule"]
    # and bad input is a named error that starts nothing
    assert main([*argv[:4], "2026-03-01T12:00Z", "--to", "2026-03-01T11:00Z"]) == 1
    assert "is before --from" in capsys.readouterr().err
    assert len(_runs(name)) == 7


def _set_back(workflow: str, to: datetime) -> None:
    """Set the workflow's last fire time back to ``to``, under its schedule lock (as if beat had
    been down since): a fire running meanwhile cannot move it forward after this."""
    with default_services().history.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"orchestrator.schedule:{workflow}"},
        )
        conn.execute(
            text("UPDATE schedule_states SET last_fire_time = :t WHERE workflow = :w"),
            {"t": to, "w": workflow},
        )


def test_a_running_beat_catches_up_pauses_and_resumes_without_restart(
    worker: Any,
    start_beats: Callable[[Path, int], list[BeatProcess]],  # noqa: F811
    tmp_path: Path,
    servers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given three workflows beat fires every second: catchup all, none, and one to pause
    tag = uuid.uuid4().hex[:6]
    every_all, every_none, name = f"every_all_{tag}", f"every_none_{tag}", f"pausable_{tag}"
    workflows = tmp_path / "workflows"
    for wf, catchup in ((every_all, "all"), (every_none, "none"), (name, "latest")):
        schedule = {"every": 1, "overlap": "allow", "catchup": catchup}
        _write_workflow(workflows, wf, schedule, {"task": "tests.integration.workload.noop"})
    env = {**servers, "ORCHESTRATOR_WORKFLOWS_PATH": str(workflows)}
    (beat,) = start_beats(workflows, 1)
    _wait("scheduled runs", lambda: all(len(_runs(wf)) >= 2 for wf in (every_all, every_none)))
    # When their last fire time is set back to 6 s before their first run (a downtime)
    first = {wf: _runs(wf)[0][0] for wf in (every_all, every_none)}
    for wf, t in first.items():
        _set_back(wf, t - timedelta(seconds=6))

    # Then beat's next regular fire starts the 5 missed fire times for `all`, none for `none`
    def caught() -> list[datetime]:
        return [t for t, *_ in _runs(every_all) if t < first[every_all]]

    _wait("the catch-up", lambda: len(caught()) >= 5)  # a fire starts them oldest first
    assert caught() == [first[every_all] - timedelta(seconds=s) for s in (5, 4, 3, 2, 1)]
    assert [t for t, *_ in _runs(every_none) if t < first[every_none]] == []
    times = [t for t, *_ in _runs(every_none)]  # and `none` went on with its regular slots
    assert len(times) >= 3 and len(set(times)) == len(times)

    # When a schedule is paused from the CLI (beat keeps running: it is not restarted)
    _wait("scheduled runs", lambda: len(_runs(name)) >= 2)
    done = _cli(env, "schedules", "pause", name)
    paused_at = datetime.now(UTC)
    assert done.returncode == 0, done.stderr
    sends = beat.sends(name)
    _wait("beat sending while paused", lambda: beat.sends(name) >= sends + 3, timeout=20)
    registry.ensure_loaded(workflows)  # the CLI in this process knows them too
    assert main(["schedules"]) == 0
    listed = capsys.readouterr().out
    # Then no run starts later than one interval after the pause, while beat keeps sending
    late = [at for _, at, _ in _runs(name) if at > paused_at + timedelta(seconds=1)]
    assert late == [] and beat.proc.poll() is None
    assert name in listed and "paused" in listed.split(name, 1)[1].split("\n")[0]
    assert f"schedule {name} " in worker.output() and "no run (paused)" in worker.output()
    # When it is resumed: runs start again within a few seconds, none for the paused time
    resumed_at = datetime.now(UTC)  # the resume takes effect after this moment
    assert main(["schedules", "resume", name]) == 0
    _wait("runs after resume", lambda: any(at > resumed_at for _, at, _ in _runs(name)))
    gap = [t for t, at, _ in _runs(name) if paused_at + timedelta(seconds=1) < at < resumed_at]
    assert gap == []
    after = [t for t, at, _ in _runs(name) if at > resumed_at]
    assert min(after) > resumed_at - timedelta(seconds=1)  # no catch-up of the paused time
