"""The submit path on the in-memory twins: one write to history per run, the plan built once per
spec, and a run recorded but never published still published by the reconciler, once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from orchestrator import Workflow
from orchestrator.client import get_run, run_workflow
from orchestrator.core.planner import Plan
from orchestrator.engine import services as services_module
from orchestrator.engine import submit as submit_module
from orchestrator.engine.canvas import CanvasBuilder
from orchestrator.engine.services import PlanKey
from orchestrator.ops.reconciler import Reconciler
from orchestrator.records import NewRun, NewStep
from orchestrator.status import RunStatus
from tests.unit.engine.harness import Engine, calls
from tests.unit.engine.steps import CHAIN, inc, source


class Killed(BaseException):
    """The submitting process killed (nothing after it runs, no ``except Exception`` sees it)."""


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The version of each spec planned, in order (every module that plans is watched)."""
    seen: list[str] = []
    for module in (submit_module, services_module):
        build = module.build_plan

        def counted(spec: Any, done: frozenset[str], build: Any = build) -> Plan:
            seen.append(spec.version)
            return build(spec, done)  # type: ignore[no-any-return]

        monkeypatch.setattr(module, "build_plan", counted)
    yield seen


def _a_lease_later(engine: Engine) -> None:
    lease = engine.rt.settings.lease_seconds
    engine.history_ahead = timedelta(seconds=lease + 1)
    engine.state_clock.advance(lease + 1)


def test_a_spec_is_planned_once_per_process(engine: Engine, planned: list[str]) -> None:
    # When one Workflow is run three times, and another one once
    runs = [engine.start(CHAIN, {"start": n}) for n in range(3)]
    other = Workflow("submit_other").step("a", source).step("b", inc, after="a")
    runs.append(engine.start(other, {"start": 10}))
    engine.worker.run(lambda: all(r.status().terminal for r in runs), timeout=10)
    # Then each spec was planned once, by the submitter; the steps found it in the cache
    assert planned == [CHAIN.spec.version, other.spec.version]
    assert [r.wait() for r in runs] == [2, 3, 4, 11]


def test_the_plans_kept_are_those_used_last(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, planned: list[str]
) -> None:
    # Given a cache of two plans, holding CHAIN's and another's
    monkeypatch.setattr(services_module, "PLANS_KEPT", 2)
    other = Workflow("submit_lru_b").step("a", source).spec
    third = Workflow("submit_lru_c").step("a", source).spec
    engine.rt.start_plan(CHAIN.spec)
    engine.rt.start_plan(other)
    # When CHAIN's is used again, then a third spec is planned
    engine.rt.plan(PlanKey(CHAIN.spec.version))
    engine.rt.start_plan(third)
    # Then the least recently used (the other's) made room, not CHAIN's
    engine.rt.start_plan(CHAIN.spec)
    engine.rt.start_plan(other)
    assert planned == [CHAIN.spec.version, other.version, third.version, other.version]


def test_a_run_is_recorded_published_in_the_transaction_that_writes_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    marked: list[str] = []
    monkeypatch.setattr(engine.history, "mark_published", marked.append)
    # When a run of a workflow without a concurrency limit is submitted
    run = engine.start(CHAIN, {"start": 1})
    # Then history has it published from its first write on, with no second write for it
    record = run.record()
    assert record.published_at is not None and record.published_at == record.created_at
    assert marked == []
    # and Redis no longer notes it as being published
    _a_lease_later(engine)
    assert engine.state.unconfirmed_runs(older_than=0) == []
    engine.finish(run)
    assert run.wait() == 3


def test_a_run_whose_submitter_died_before_publishing_it_is_published_by_the_reconciler(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submitter killed after writing a run and before publishing it
    def killed(self: CanvasBuilder, segment: Any) -> None:
        raise Killed

    monkeypatch.setattr(CanvasBuilder, "publish", killed)
    with pytest.raises(Killed):
        engine.start(CHAIN, {"start": 5})
    monkeypatch.undo()
    [record] = engine.history.list_runs(CHAIN.name)
    run_id = record.id
    assert record.status == RunStatus.PENDING and engine.worker.take() == []
    # When a reconciler pass comes a lease period later
    reconciler = Reconciler(engine.rt)
    assert reconciler.pass_once()["published"] == 0  # not before
    _a_lease_later(engine)
    assert reconciler.pass_once()["published"] == 1
    # Then the run runs, once, and the reconciler does not publish it again
    assert reconciler.pass_once()["published"] == 0
    run = get_run(run_id, app=engine.app)
    engine.finish(run)
    assert run.wait() == 7
    assert calls(run) == [("a", 1), ("b", 1), ("c", 1)]


def test_a_published_run_that_waits_in_a_backlog_is_not_published_again(
    engine: Engine,
) -> None:
    # Given a run published by its submitter, whose first message waits in its queue
    run = engine.start(CHAIN, {"start": 1})
    # When reconciler passes come long after, while it still waits
    _a_lease_later(engine)
    reconciler = Reconciler(engine.rt)
    assert reconciler.pass_once()["published"] == 0
    assert reconciler.pass_once()["published"] == 0
    # Then its first step has one message, and it runs once
    taken = engine.take()
    assert list(taken) == ["a"] and run.status() == RunStatus.PENDING
    taken["a"].execute()
    engine.finish(run)
    assert run.wait() == 3


def test_a_note_of_a_run_that_was_never_recorded_or_moved_on_is_dropped(engine: Engine) -> None:
    # Given notes of a run history never recorded (its write failed), and of a run cancelled
    engine.state.begin_run("not-recorded", {}, {}, publishing=True)
    spec, run_id = CHAIN.spec, "00000000-0000-4000-8000-000000000001"
    engine.history.create_run(
        NewRun(run_id, spec.name, spec.version, spec.model_dump(mode="json"), {}, "api"),
        [NewStep(s.id, s.task, f"{run_id}:{s.id}") for s in spec.steps],
    )
    engine.history.cancel_run(run_id, "cancelled")
    engine.state.begin_run(run_id, {}, {}, publishing=True)
    # When a reconciler pass sees them a lease period later
    _a_lease_later(engine)
    assert Reconciler(engine.rt).pass_once()["published"] == 0
    # Then neither is published, and both notes are gone
    assert engine.worker.take() == []
    assert engine.state.unconfirmed_runs(older_than=0) == []


def test_a_second_submit_with_the_key_of_a_run_leaves_no_note(engine: Engine) -> None:
    # When a run is submitted twice with one idempotency key
    one, two = (
        run_workflow(CHAIN, {"start": 1}, idempotency_key="submit-key-1", app=engine.app)
        for _ in range(2)
    )
    # Then both are the run that was published once, and no note is left for the second
    assert one.id == two.id
    assert engine.state.unconfirmed_runs(older_than=0) == []
    assert list(engine.take()) == ["a"]
