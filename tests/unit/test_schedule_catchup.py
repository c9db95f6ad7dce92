"""Unit tests for catch-up, fire-time ranges, pause, resume and backfill, on the in-memory twins
(a fake clock: fire and send times are given; no beat, no server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.app import reset_default_app, set_default_app
from orchestrator.cli import main
from orchestrator.core import registry
from orchestrator.core.spec import ScheduleSpec, WorkflowSpec
from orchestrator.engine.services import services_of
from orchestrator.errors import BackfillError, NotScheduled, WorkflowNotFound
from orchestrator.ops import schedule_control
from orchestrator.ops.catchup import FireDecision, decide
from orchestrator.ops.fire_times import count_fire_times, fire_times, latest_fire_times
from orchestrator.ops.periodic import check_missed, install
from orchestrator.ops.schedule import (
    FIRE_TASK,
    SentAt,
    beat_entries,
    describe,
    workflow_entry,
)
from orchestrator.records import ScheduleState
from orchestrator.settings import Settings
from orchestrator.status import RunStatus
from orchestrator.testing.inline import inline_app, memory_adapters
from tests.unit.test_schedule import at


def minute(schedule: dict[str, Any]) -> ScheduleSpec:
    return ScheduleSpec.model_validate(schedule)


def last(text: str | None, paused: bool = False) -> ScheduleState:
    return ScheduleState("wf", paused, None if text is None else at(text))


# -- fire times of a range --------------------------------------------------------------------


def test_fire_times_of_a_range_are_the_aligned_slots_oldest_first() -> None:
    after, until = at("2026-03-01T10:00:00"), at("2026-03-01T10:05:00")
    # every: the slots in (after, until]
    assert fire_times(None, 60, after, until, 100) == [
        at(f"2026-03-01T10:0{m}:00") for m in range(1, 6)
    ]
    assert fire_times(None, 60, after, until, 2) == [at("2026-03-01T10:01"), at("2026-03-01T10:02")]
    assert latest_fire_times(None, 60, after, until, 2) == [
        at("2026-03-01T10:04"),
        at("2026-03-01T10:05"),
    ]
    # cron: only the matching minutes; a range with none is empty
    assert fire_times("*/2 * * * *", None, after, until, 100) == [
        at("2026-03-01T10:02"),
        at("2026-03-01T10:04"),
    ]
    assert fire_times("0 2 * * *", None, after, until, 100) == []
    assert latest_fire_times("0 2 * * *", None, None, until, 3) == [
        at("2026-02-27T02:00"),
        at("2026-02-28T02:00"),
        at("2026-03-01T02:00"),
    ]


def test_counting_fire_times_is_exact_for_every_and_capped_for_cron() -> None:
    day = (at("2026-03-01T00:00"), at("2026-03-02T00:00"))
    assert count_fire_times(None, 1, *day, cap=10) == 86400  # arithmetic, not a walk
    assert count_fire_times(None, 0.5, *day, cap=10) == 172800
    assert count_fire_times("* * * * *", None, *day, cap=100) == 100
    assert count_fire_times("0 * * * *", None, *day, cap=100) == 24
    assert count_fire_times(None, 60, day[1], day[0], cap=10) == 0


# -- catch-up arithmetic ------------------------------------------------------------------------

EVERY_MINUTE = minute({"every": 60})


def test_a_regular_fire_on_time_starts_its_fire_time() -> None:
    fire = at("2026-03-01T10:01:00")
    sent = fire + timedelta(milliseconds=20)
    for catchup in ("latest", "all", "none"):
        schedule = minute({"every": 60, "catchup": catchup})
        assert decide(schedule, last("2026-03-01T10:00"), fire, sent) == FireDecision((fire,))


def test_a_fire_already_handled_or_paused_starts_nothing() -> None:
    fire = at("2026-03-01T10:01:00")
    assert decide(EVERY_MINUTE, last("2026-03-01T10:01"), fire, fire).start == ()
    assert decide(EVERY_MINUTE, last("2026-03-01T10:05"), fire, fire).start == ()
    paused = decide(EVERY_MINUTE, last("2026-03-01T10:00", paused=True), fire, fire)
    assert paused.start == () and paused.note == "paused"


def test_a_new_schedule_starts_at_its_first_regular_slot_not_at_beats_start() -> None:
    fire = at("2026-03-01T10:01:00")
    assert decide(EVERY_MINUTE, last(None), fire, fire).start == (fire,)
    assert decide(EVERY_MINUTE, last(None), fire, fire, startup=True).start == ()


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [("latest", 1), ("all", 60), ("none", 0)],
)
def test_beat_down_for_an_hour_catches_up_by_mode(catchup: str, expected: int) -> None:
    # Given an every-minute schedule last handled at 10:00, and beat back at 11:00:20
    schedule = minute({"every": 60, "catchup": catchup})
    fire, sent = at("2026-03-01T11:00:00"), at("2026-03-01T11:00:20")
    # When beat's start-up check fires for 11:00
    decision = decide(schedule, last("2026-03-01T10:00"), fire, sent, startup=True)
    # Then: latest starts 11:00 only; all every minute 10:01..11:00; none nothing
    assert len(decision.start) == expected and decision.missed == 60
    if expected:
        assert decision.start[-1] == fire
        assert decision.start[0] == fire - timedelta(minutes=expected - 1)
    assert "60 fire time(s) missed since 2026-03-01T10:00:00+00:00" in decision.note


def test_none_still_starts_the_slot_beat_sent_on_time_after_the_gap() -> None:
    # beat came back before 11:00 (start-up check: nothing), then sent 11:00 on time
    schedule = minute({"every": 60, "catchup": "none"})
    fire = at("2026-03-01T11:00:00")
    on_time = decide(schedule, last("2026-03-01T10:00"), fire, fire + timedelta(seconds=0.05))
    assert on_time.start == (fire,) and on_time.missed == 59
    # a send more than half a period (here 30 s) after its slot is late: that slot was missed
    late = decide(schedule, last("2026-03-01T10:00"), fire, fire + timedelta(seconds=31))
    assert late.start == () and late.missed == 60


def test_catchup_all_is_capped_to_the_latest_fire_times() -> None:
    schedule = minute({"every": 60, "catchup": "all"})
    fire = at("2026-03-01T11:00:00")
    decision = decide(schedule, last("2026-03-01T09:00"), fire, fire, startup=True, limit=5)
    assert decision.start == tuple(fire - timedelta(minutes=m) for m in (4, 3, 2, 1, 0))
    assert decision.missed == 120 and decision.dropped == 115


def test_a_daily_cron_catches_up_days_missed() -> None:
    schedule = minute({"cron": "0 2 * * *", "catchup": "all"})
    fire = at("2026-03-04T02:00")
    decision = decide(schedule, last("2026-03-01T02:00"), fire, at("2026-03-04T09:00"), True)
    assert decision.start == (at("2026-03-02T02:00"), at("2026-03-03T02:00"), fire)


# -- the fire task, pause and backfill on the in-memory twins ---------------------------------


def noop(**_: Any) -> None:
    """The step of the scheduled workflows here (never executed: nothing consumes)."""


@pytest.fixture
def app() -> Iterator[Any]:
    """An in-memory app with beat's tasks, the step task ``unit.noop`` and it as default app."""
    made = inline_app(Settings(), memory_adapters())
    install(made, Settings())
    made.task(name="unit.noop")(noop)
    set_default_app(made)
    yield made
    reset_default_app()


def scheduled(name: str, schedule: dict[str, Any] | None) -> WorkflowSpec:
    return registry.register(
        WorkflowSpec.model_validate(
            {"name": name, "schedule": schedule, "steps": [{"id": "a", "task": "unit.noop"}]}
        )
    )


def fire(app: Any, spec: WorkflowSpec, fire_time: datetime, **extra: Any) -> dict[str, Any]:
    kwargs = {"workflow": spec.name, "fire_time": fire_time.isoformat(), **extra}
    assert spec.schedule is not None
    kwargs.setdefault("overlap", spec.schedule.overlap)
    result: dict[str, Any] = app.tasks[FIRE_TASK].apply(kwargs=kwargs).get()
    return result


def test_fire_records_its_time_pause_skips_and_resume_does_not_catch_up(app: Any) -> None:
    rt = services_of(app)
    wf = scheduled("unit_pausable", {"every": 60, "overlap": "allow", "catchup": "all"})
    t0 = at("2026-03-01T10:00")
    first = fire(app, wf, t0)
    assert first["run_id"] and rt.history.schedule_state(wf.name).last_fire_time == t0
    # paused: the next fire starts nothing but counts as handled
    assert schedule_control.pause(rt, wf.name).paused
    skipped = fire(app, wf, t0 + timedelta(minutes=1))
    assert skipped["run_id"] is None and skipped["skipped"] == "paused"
    # resumed (at 10:05:30): the slots passed while paused are handled, 10:06 runs alone
    resumed = schedule_control.resume(rt, wf.name, now=at("2026-03-01T10:05:30"))
    assert not resumed.paused and resumed.last_fire_time == at("2026-03-01T10:05")
    again = fire(app, wf, at("2026-03-01T10:06"))
    assert again["run_id"] and "run_ids" not in again
    assert len(rt.history.list_runs(workflow=wf.name)) == 2


def test_fire_after_downtime_with_catchup_all_starts_one_run_per_missed_time(app: Any) -> None:
    rt = services_of(app)
    wf = scheduled("unit_catchup_all", {"every": 60, "catchup": "all", "overlap": "allow"})
    rt.history.record_fire(wf.name, at("2026-03-01T10:00"))
    fire_at = at("2026-03-01T10:04")
    done = fire(app, wf, fire_at, startup=True, sent_at=at("2026-03-01T10:04:40").isoformat())
    assert len(done["run_ids"]) == 4
    keys = sorted(r.idempotency_key or "" for r in rt.history.list_runs(workflow=wf.name))
    assert keys == [f"schedule:{wf.name}:2026-03-01T10:0{m}:00+00:00" for m in (1, 2, 3, 4)]
    # a second beat's message for the same slot starts nothing more
    assert fire(app, wf, fire_at)["skipped"].startswith("already handled")
    assert len(rt.history.list_runs(workflow=wf.name)) == 4


def test_overlap_skip_holds_back_the_whole_catch_up(app: Any, monkeypatch: Any) -> None:
    rt = services_of(app)
    wf = scheduled("unit_overlap", {"every": 60, "catchup": "all"})
    first = fire(app, wf, at("2026-03-01T10:00"))["run_id"]  # never runs: stays pending
    assert rt.history.get_run(first).status == RunStatus.PENDING  # type: ignore[union-attr]
    held = fire(app, wf, at("2026-03-01T10:03"), startup=True)
    assert held["run_id"] is None and held["skipped"] == f"run {first} is still pending"
    assert rt.history.schedule_state(wf.name).last_fire_time == at("2026-03-01T10:03")


def test_backfill_starts_each_fire_time_once_keyed_like_beat(app: Any) -> None:
    rt = services_of(app)
    wf = scheduled("unit_backfill", {"cron": "0 * * * *", "inputs": {}})
    beat_run = fire(app, wf, at("2026-03-01T02:00"))["run_id"]  # beat fired one of them
    seen: list[tuple[datetime, bool]] = []
    start, end = at("2026-03-01T00:00"), at("2026-03-01T04:00")
    done = schedule_control.backfill(
        rt, wf.name, start, end, progress=lambda t, _, n: seen.append((t, n))
    )
    assert done.fire_times == [at(f"2026-03-01T0{h}:00") for h in range(5)]  # ends included
    assert len(done.started) == 4 and done.existing == [beat_run]
    assert seen[2] == (at("2026-03-01T02:00"), False)
    again = schedule_control.backfill(rt, wf.name, start, end)
    assert again.started == [] and sorted(again.existing) == sorted([*done.started, beat_run])
    assert len(rt.history.list_runs(workflow=wf.name)) == 5


def test_bad_pause_and_backfill_requests_are_named_errors_and_start_nothing(app: Any) -> None:
    rt = services_of(app)
    plain = scheduled("unit_unscheduled", None)
    wf = scheduled("unit_every_second", {"every": 1})
    with pytest.raises(WorkflowNotFound, match="unit_nope"):
        schedule_control.pause(rt, "unit_nope")
    with pytest.raises(NotScheduled, match="'unit_unscheduled' has no schedule"):
        schedule_control.resume(rt, plain.name)
    with pytest.raises(NotScheduled):
        schedule_control.backfill(rt, plain.name, at("2026-03-01"), at("2026-03-02"))
    with pytest.raises(BackfillError, match="is before --from"):
        schedule_control.backfill(rt, wf.name, at("2026-03-02"), at("2026-03-01"))
    with pytest.raises(BackfillError, match="holds 3601 fire times, more than 100; pass --yes"):
        schedule_control.backfill(rt, wf.name, at("2026-03-01T10:00"), at("2026-03-01T11:00"))
    with pytest.raises(BackfillError, match="more than 10000 fire times, more than 10000"):
        schedule_control.backfill(rt, wf.name, at("2026-03-01"), at("2026-03-02"), limit=10**9)
    assert rt.history.list_runs(workflow=wf.name) == []
    assert rt.history.schedule_states() == {}


def test_cli_pause_resume_backfill_and_their_errors(
    app: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    wf = scheduled("unit_cli", {"every": 60})
    assert main(["schedules", "pause", wf.name]) == 0
    assert "paused schedule of unit_cli" in capsys.readouterr().out
    assert main(["schedules", "--json"]) == 0
    rows = {r["workflow"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[wf.name]["paused"] is True
    assert main(["schedules", "resume", wf.name]) == 0
    assert "resumed schedule of unit_cli" in capsys.readouterr().out
    argv = ["schedules", "backfill", wf.name, "--from", "2026-03-01T10:00", "--to"]
    assert main([*argv, "2026-03-01T10:02:30Z"]) == 0
    out = capsys.readouterr().out
    assert "3 fire time(s)" in out and "2026-03-01T10:01:00Z  started" in out
    assert "3 started, 0 already there" in out
    assert main([*argv, "2026-03-01T10:02:30Z"]) == 0
    assert "0 started, 3 already there" in capsys.readouterr().out
    assert main([*argv, "yesterday"]) == 1
    assert "--to 'yesterday' is not an ISO 8601 time" in capsys.readouterr().err
    assert main(["schedules", "pause", "unit_nope"]) == 1
    assert "'unit_nope' is not registered" in capsys.readouterr().err
    assert main([*argv, "2026-03-01T12:00", "--max", "10"]) == 1
    assert "holds 121 fire times, more than 10" in capsys.readouterr().err


def test_one_description_of_a_schedule_for_the_cli_and_the_console() -> None:
    wf = scheduled("unit_describe", {"every": 30, "catchup": "none", "inputs": {"n": 1}})
    state = ScheduleState(wf.name, True, at("2026-03-01T10:00"))
    row = describe(wf, state, at("2026-03-01T10:00:10"))
    assert row == {
        "workflow": "unit_describe",
        "schedule": "every 30s",
        "cron": None,
        "every": 30.0,
        "inputs": {"n": 1},
        "overlap": "skip",
        "catchup": "none",
        "paused": True,
        "last_fire_time": at("2026-03-01T10:00"),
        "next_fire_time": at("2026-03-01T10:00:30"),
    }
    assert describe(wf)["paused"] is None  # not known
    entry = workflow_entry(wf, wf.schedule, at("2026-03-01T10:00"))  # type: ignore[arg-type]
    assert entry["kwargs"]["sent_at"] == SentAt()
    sent = datetime.fromisoformat(SentAt()())
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5


def test_beat_start_sends_each_schedule_once_as_the_start_up_check(app: Any) -> None:
    # Given beat's entries for two scheduled workflows (and the cleanup, which is not checked)
    specs = [
        scheduled("unit_check_a", {"every": 60}),
        scheduled("unit_check_b", {"cron": "0 2 * * *"}),
    ]
    app.conf.beat_schedule = beat_entries(specs, retention_days=30)
    sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    app.send_task = lambda name, kwargs, **options: sent.append((name, kwargs, options))
    # When beat starts (beat_init, whose sender is beat's service)
    check_missed(sender=SimpleNamespace(app=app))
    # Then each schedule's fire message went out once, evaluated and marked as the check
    assert [(name, kw["workflow"], kw["startup"]) for name, kw, _ in sent] == [
        (FIRE_TASK, "unit_check_a", True),
        (FIRE_TASK, "unit_check_b", True),
    ]
    fire_time = datetime.fromisoformat(sent[0][1]["fire_time"])
    assert fire_time.second == 0 and datetime.now(UTC) - fire_time < timedelta(minutes=1)
    assert isinstance(sent[0][1]["sent_at"], str) and sent[1][2]["expires"] == 86400
