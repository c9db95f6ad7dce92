"""Unit tests for schedule.py: aligned fire times, cron math, the beat schedule and its entries."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from orchestrator.app import create_app, reset_default_app, set_default_app
from orchestrator.cli import main
from orchestrator.core import registry
from orchestrator.core.spec import WorkflowSpec
from orchestrator.errors import ScheduleError, ServiceUnavailable
from orchestrator.ops import periodic
from orchestrator.ops.periodic import install
from orchestrator.ops.schedule import (
    CLEANUP_ENTRY,
    CLEANUP_TASK,
    ENTRY_PREFIX,
    FIRE_TASK,
    Cron,
    FireSchedule,
    FireTime,
    beat_entries,
    cron_next,
    cron_previous,
    fire_time_iso,
    idempotency_key,
    next_fire,
    previous_fire,
)
from orchestrator.settings import Settings
from orchestrator.stores.postgres.housekeeping import TRANSIENT_ERRORS
from orchestrator.testing.inline import inline_app, memory_adapters


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spec(name: str, schedule: Any = None) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {"name": name, "schedule": schedule, "steps": [{"id": "a", "task": "t.a"}]}
    )


# -- every: aligned to multiples of N seconds since the epoch ----------------------------------


@pytest.mark.parametrize(
    ("every", "now", "slot", "upcoming"),
    [
        (1, "2026-03-01T10:00:05.730", "2026-03-01T10:00:05", "2026-03-01T10:00:06"),
        (60, "2026-03-01T10:00:59.999", "2026-03-01T10:00:00", "2026-03-01T10:01:00"),
        (60, "2026-03-01T10:01:00", "2026-03-01T10:01:00", "2026-03-01T10:02:00"),
        (0.25, "2026-03-01T10:00:00.600", "2026-03-01T10:00:00.500", "2026-03-01T10:00:00.750"),
        (86400, "2026-03-01T23:59:00", "2026-03-01T00:00:00", "2026-03-02T00:00:00"),
        (7, "1970-01-01T00:00:20", "1970-01-01T00:00:14", "1970-01-01T00:00:21"),
    ],
)
def test_every_slots_are_multiples_of_n_since_the_epoch(
    every: float, now: str, slot: str, upcoming: str
) -> None:
    assert previous_fire(None, every, at(now)) == at(slot)
    assert next_fire(None, every, at(now)) == at(upcoming)


def test_two_beats_sending_at_different_moments_of_one_slot_name_it_the_same() -> None:
    # Given two beats whose clocks tick at different phases within the same 10 s slot
    first = fire_time_iso(None, 10, at("2026-03-01T10:00:00.004"))
    second = fire_time_iso(None, 10, at("2026-03-01T10:00:09.990"))
    # Then they compute one fire time and so one idempotency key
    assert first == second == "2026-03-01T10:00:00+00:00"
    assert idempotency_key("etl", first) == "schedule:etl:2026-03-01T10:00:00+00:00"
    # And the next slot is another key
    assert fire_time_iso(None, 10, at("2026-03-01T10:00:10.001")) != first


def test_fire_times_are_utc_whatever_the_timezone_of_now() -> None:
    paris = datetime(2026, 3, 1, 11, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert fire_time_iso(None, 60, paris) == "2026-03-01T10:00:00+00:00"
    assert fire_time_iso("0 * * * *", None, paris) == "2026-03-01T10:00:00+00:00"


# -- cron -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "now", "previous", "upcoming"),
    [
        ("0 2 * * *", "2026-03-01T10:00:00", "2026-03-01T02:00:00", "2026-03-02T02:00:00"),
        ("0 2 * * *", "2026-03-01T02:00:00", "2026-03-01T02:00:00", "2026-03-02T02:00:00"),
        ("*/15 * * * *", "2026-03-01T10:44:59", "2026-03-01T10:30:00", "2026-03-01T10:45:00"),
        ("5/20 9-10 * * *", "2026-03-01T11:00:00", "2026-03-01T10:45:00", "2026-03-02T09:05:00"),
        ("30 9 * * mon-fri", "2026-03-01T12:00:00", "2026-02-27T09:30:00", "2026-03-02T09:30:00"),
        ("0 0 * * 7", "2026-03-02T00:00:00", "2026-03-01T00:00:00", "2026-03-08T00:00:00"),
        ("0 0 1 jan,jul *", "2026-03-01T00:00:00", "2026-01-01T00:00:00", "2026-07-01T00:00:00"),
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2024-02-29T00:00:00", "2028-02-29T00:00:00"),
        ("59 23 31 12 *", "2026-12-31T23:59:30", "2026-12-31T23:59:00", "2027-12-31T23:59:00"),
    ],
)
def test_cron_previous_and_next_slots(expr: str, now: str, previous: str, upcoming: str) -> None:
    assert previous_fire(expr, None, at(now)) == at(previous)
    assert next_fire(expr, None, at(now)) == at(upcoming)


def test_cron_day_of_month_and_day_of_week_match_either_when_both_are_restricted() -> None:
    # classic cron: "on the 13th, and on every Friday"
    cron = Cron.parse("0 0 13 * fri")
    assert cron.day_matches(datetime(2026, 3, 13).date())  # a Friday the 13th
    assert cron.day_matches(datetime(2026, 3, 6).date())  # a Friday
    assert cron.day_matches(datetime(2026, 4, 13).date())  # a Monday the 13th
    assert not cron.day_matches(datetime(2026, 3, 7).date())
    # with a "*" in one of them both must match, which is the other one alone
    assert not Cron.parse("0 0 * * fri").day_matches(datetime(2026, 3, 7).date())
    assert not Cron.parse("0 0 */2 * fri").day_matches(datetime(2026, 3, 6).date())


def test_a_cron_that_never_matches_has_no_fire_time() -> None:
    assert cron_previous(Cron.parse("0 0 31 2 *"), at("2026-03-01T00:00:00")) is None
    assert cron_next(Cron.parse("0 0 31 2 *"), at("2026-03-01T00:00:00")) is None


@pytest.mark.parametrize(
    "expr", ["0 2 * *", "61 * * * *", "0 5-3 * * *", "*/0 * * * *", "x * * * *"]
)
def test_bad_cron_is_a_schedule_error(expr: str) -> None:
    with pytest.raises(ScheduleError, match="cron"):
        Cron.parse(expr, "nightly")


# -- the beat schedule ----------------------------------------------------------------------------


def test_due_once_when_a_slot_passed_since_the_last_send() -> None:
    clock = [at("2026-03-01T10:00:05.010")]
    sched = FireSchedule(every=1, nowfun=lambda: clock[0])
    # sent for slot 10:00:04 at 10:00:04.01 -> slot 10:00:05 is due, check again at :06
    due, wait = sched.is_due(at("2026-03-01T10:00:04.010"))
    assert due and wait == pytest.approx(0.99 + 0.02)
    # just sent for 10:00:05 -> nothing due until 10:00:06
    due, wait = sched.is_due(clock[0])
    assert not due and wait == pytest.approx(0.99 + 0.02)


def test_missed_slots_catch_up_with_one_run_for_the_latest_slot() -> None:
    # Given beat was down for an hour with an every-minute schedule
    now = at("2026-03-01T11:00:30")
    sched = FireSchedule(every=60, nowfun=lambda: now)
    last_sent = at("2026-03-01T10:00:00.010")
    # Then the entry is due once, and the message names the latest missed slot only
    assert sched.is_due(last_sent).is_due
    assert fire_time_iso(None, 60, now) == "2026-03-01T11:00:00+00:00"
    # and once sent (Celery stores the send time) nothing more is due in that minute
    assert not sched.is_due(now).is_due


def test_cron_schedule_is_due_after_its_slot() -> None:
    now = at("2026-03-02T02:00:00.020")
    sched = FireSchedule(cron="0 2 * * *", nowfun=lambda: now)
    assert sched.is_due(at("2026-03-01T02:00:00.020")).is_due
    assert not sched.is_due(now).is_due
    assert sched.is_due(now).next == pytest.approx(86400 - 0.02 + 0.02)


def test_schedule_and_fire_time_survive_the_beat_schedule_file() -> None:
    # PersistentScheduler pickles entries into its shelve file
    sched, fire = FireSchedule(cron="0 2 * * *"), FireTime(None, 5)
    assert pickle.loads(pickle.dumps(sched)) == sched
    assert pickle.loads(pickle.dumps(fire)) == fire
    assert sched != FireSchedule(every=5)
    sent = datetime.fromisoformat(fire())  # evaluated when beat sends: the current 5 s slot
    assert sent.microsecond == 0 and sent.second % 5 == 0
    assert timedelta(0) <= datetime.now(UTC) - sent < timedelta(seconds=5)


def test_a_schedule_needs_exactly_one_of_cron_and_every() -> None:
    with pytest.raises(ScheduleError):
        FireSchedule()
    with pytest.raises(ScheduleError):
        FireSchedule(cron="* * * * *", every=1)


def test_beat_entries_one_per_scheduled_workflow_and_the_cleanup() -> None:
    specs = [
        spec("nightly", {"cron": "0 2 * * *", "inputs": {"day": "today"}}),
        spec("often", {"every": 5, "overlap": "allow"}),
        spec("manual"),
    ]
    entries = beat_entries(specs, retention_days=30)
    assert set(entries) == {f"{ENTRY_PREFIX}nightly", f"{ENTRY_PREFIX}often", CLEANUP_ENTRY}
    nightly = entries[f"{ENTRY_PREFIX}nightly"]
    assert nightly["task"] == FIRE_TASK
    assert nightly["schedule"] == FireSchedule(cron="0 2 * * *")
    kwargs = nightly["kwargs"]
    assert kwargs["workflow"] == "nightly" and kwargs["inputs"] == {"day": "today"}
    assert kwargs["overlap"] == "skip" and kwargs["fire_time"] == FireTime("0 2 * * *", None)
    assert WorkflowSpec.model_validate(kwargs["spec"]) == specs[0]
    assert nightly["options"]["expires"] == 86400
    often = entries[f"{ENTRY_PREFIX}often"]
    assert often["kwargs"]["overlap"] == "allow" and often["options"]["expires"] == 60
    assert entries[CLEANUP_ENTRY]["task"] == CLEANUP_TASK
    assert CLEANUP_ENTRY not in beat_entries(specs, retention_days=0)


def test_schedules_command_lists_each_scheduled_workflow(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # the example workflows (config/workflows) include etl, nightly at 02:00 UTC
    set_default_app(memory_app())
    try:
        assert main(["schedules", "--json"]) == 0
        rows = {r["workflow"]: r for r in json.loads(capsys.readouterr().out)}
        etl = rows["etl"]
        assert etl["schedule"] == "cron 0 2 * * *" and etl["overlap"] == "skip"
        assert etl["inputs"] == {"source": "s3://bucket/day"} and etl["catchup"] == "latest"
        assert etl["paused"] is False and etl["last_fire_time"] is None
        upcoming = datetime.fromisoformat(etl["next_fire_time"])
        assert (upcoming.hour, upcoming.minute) == (2, 0)
        assert timedelta(0) < upcoming - datetime.now(UTC) <= timedelta(days=1)
        assert main(["schedules"]) == 0
        out = capsys.readouterr().out
        assert "etl" in out and "active" in out and "latest" in out
    finally:
        reset_default_app()


def test_install_registers_beats_tasks_and_one_entry_per_scheduled_workflow() -> None:
    registry.register(spec("unit_every_5", {"every": 5, "inputs": {"n": 1}}))
    app = create_app(Settings(), "unit")
    app.conf.beat_schedule = {"mine": {"task": "t.mine", "schedule": 10}}
    install(app, Settings())
    assert {FIRE_TASK, CLEANUP_TASK} <= set(app.tasks)
    assert set(TRANSIENT_ERRORS) < set(app.tasks[FIRE_TASK].autoretry_for)
    entries = app.conf.beat_schedule
    assert "mine" in entries and CLEANUP_ENTRY in entries  # a user's own entries are kept
    assert entries[f"{ENTRY_PREFIX}unit_every_5"]["schedule"] == FireSchedule(every=5)
    assert entries[f"{ENTRY_PREFIX}unit_every_5"]["kwargs"]["inputs"] == {"n": 1}


def memory_app() -> Any:
    """An app on the in-memory twins, with beat's tasks installed."""
    app = inline_app(Settings(), memory_adapters())
    install(app, Settings())
    return app


@pytest.mark.parametrize(
    "error",
    [
        ServiceUnavailable("PostgreSQL", "postgresql://db", "connection refused", "start it"),
        redis.ConnectionError("Connection refused"),
    ],
)
def test_a_fire_retries_while_a_server_is_away_past_celerys_retry_cap(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    # Given beat's fire task, and a submit that fails 12 times as PostgreSQL or Redis is away
    # (more than Celery's default cap of 3 retries, and the 10 the task once allowed)
    app = memory_app()
    fire_task = app.tasks[FIRE_TASK]
    keys: list[str] = []

    def start(rt: Any, target: Any, inputs: Any, key: str) -> str:
        keys.append(key)
        if len(keys) <= 12:
            raise error
        return "run-1"

    monkeypatch.setattr(periodic, "start_run", start)
    # When beat's message for one fire time is executed (eagerly: retries run at once)
    fire_time = "2026-03-01T10:00:00+00:00"
    wf = spec("wf", {"every": 60, "overlap": "allow"}).model_dump(mode="json")
    kwargs = {"workflow": "wf", "fire_time": fire_time, "overlap": "allow", "spec": wf}
    result = fire_task.apply(kwargs=kwargs)
    # Then it was retried until the run started, every time with the one key of that fire time
    assert result.get() == {"workflow": "wf", "fire_time": fire_time, "run_id": "run-1"}
    assert len(keys) == 13 and set(keys) == {idempotency_key("wf", fire_time)}
    assert fire_task.max_retries is None and fire_task.retry_backoff


def test_a_fire_does_not_retry_an_error_that_is_not_transient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a submit that fails with a validation error / When fired / Then it fails at once
    app = memory_app()
    calls: list[str] = []

    def start(rt: Any, target: Any, inputs: Any, key: str) -> str:
        calls.append(key)
        raise ScheduleError("wf", "bad")

    monkeypatch.setattr(periodic, "start_run", start)
    wf = spec("wf", {"every": 60, "overlap": "allow"}).model_dump(mode="json")
    kwargs = {"workflow": "wf", "fire_time": "2026-03-01T10:00:00+00:00", "spec": wf}
    result = app.tasks[FIRE_TASK].apply(kwargs=kwargs)
    assert result.failed() and "workflow 'wf': bad" in str(result.result) and len(calls) == 1
