"""Every run ends, with the default settings: attempts past Celery's retry cap, hard time limits
with retries, results Celery's JSON carries, and the reconciler's repairs."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orchestrator import Workflow, WorkflowFailed, run_workflow
from orchestrator.app import create_app, default_services
from orchestrator.engine.canvas import CanvasBuilder
from orchestrator.engine.services import Services, services_of
from orchestrator.ops.recovery import recover_run
from orchestrator.records import StepEvent
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.redis.run_keys import key as run_key
from tests.integration import workload
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration


def _key() -> str:
    return uuid.uuid4().hex[:10]


def _attempts(key: str) -> list[int]:
    return [c["attempt"] for c in workload.calls(key)]


# -- attempts are the framework's own ---------------------------------------------------------


def test_five_attempts_pass_celerys_retry_cap(worker: Any) -> None:
    # Given a step that fails four times, under a policy of five attempts
    key = _key()
    wf = Workflow("five-attempts").step(
        "s",
        workload.flaky,
        kwargs={"key": key, "succeed_on": 5},
        retry={"max_attempts": 5, "base_delay": 0.05, "jitter": False},
    )
    # When it runs, Then the fifth attempt succeeds (Celery's max_retries=3 does not apply)
    run = wf.run()
    assert run.wait(timeout=60) == 5
    assert _attempts(key) == [1, 2, 3, 4, 5]
    assert run.steps()[0].attempts == 5


def test_fifth_failure_fails_the_run_with_a_dead_letter(worker: Any) -> None:
    key = _key()
    wf = Workflow("five-failures").step(
        "s",
        workload.flaky,
        kwargs={"key": key, "succeed_on": 99},
        retry={"max_attempts": 5, "base_delay": 0.05, "jitter": False},
    )
    run = wf.run()
    with pytest.raises(WorkflowFailed, match="attempt 5 failed"):
        run.wait(timeout=60)
    assert _attempts(key) == [1, 2, 3, 4, 5]
    step = run.steps()[0]
    assert (step.status, step.attempts) == ("failed", 5)
    letters = [d for d in default_services().history.dead_letters() if str(d.run_id) == run.id]
    assert [d.reason for d in letters] == ["exhausted"]


# -- hard time limits with retries ------------------------------------------------------------


def test_hard_timeout_with_a_retry_policy_runs_the_next_attempt(worker: Any) -> None:
    # Given a step that overruns its hard time limit on attempt 1 only, beside a sibling in a join
    key = _key()
    wf = Workflow("hard-retry")
    wf.step(
        "slow",
        workload.slow_first,
        kwargs={"key": key},
        timeout=1.0,
        soft_timeout=0.5,
        retry={"max_attempts": 2, "base_delay": 0.1, "jitter": False},
    )
    wf.step("quick", workload.noop)
    wf.step("join", workload.noop, after=["slow", "quick"])
    # When it runs
    run = wf.run()
    # Then the pool process is killed at the limit, attempt 2 runs, and the join still happens
    assert run.wait(timeout=60) is None
    assert _attempts(key) == [1, 2]
    steps = {s.step_id: s for s in run.steps()}
    assert steps["slow"].attempts == 2 and steps["join"].status == "succeeded"
    assert "hard time limit" in (steps["slow"].attempt_log[0].error or "")


# -- results Celery's JSON carries ------------------------------------------------------------


def test_datetime_decimal_uuid_results_reach_dependents_and_the_caller(worker: Any) -> None:
    wf = Workflow("typed-results")
    wf.step("t", workload.typed)
    wf.step("n", workload.type_names, after="t")
    run = wf.run()
    out = run.wait(timeout=30)
    assert out["types"] == {"at": "datetime", "amount": "Decimal", "id": "UUID"}
    assert out["value"]["at"] == datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    assert out["value"]["amount"] == decimal.Decimal("12.50")
    assert {s.step_id: s.status for s in run.steps()} == {"t": "succeeded", "n": "succeeded"}


def test_unencodable_result_fails_its_step_and_the_worker_goes_on(worker: Any) -> None:
    run = Workflow("opaque-result").step("o", workload.opaque).run()
    with pytest.raises(WorkflowFailed) as failed:
        run.wait(timeout=30)
    message = str(failed.value)
    assert "'o'" in message and "object" in message and "JSON" in message
    # Then later runs on the same worker processes still complete (their history is written)
    later = [Workflow("after-opaque").step("a", workload.add).run(inputs={"x": 0, "y": 1})]
    later += [Workflow("after-opaque").step("a", workload.add).run(inputs={"x": 5, "y": 5})]
    assert [r.wait(timeout=30) for r in later] == [1, 10]


# -- per-run Redis state ------------------------------------------------------------------------


def test_a_finished_run_frees_its_redis_state_and_keeps_its_flag(worker: Any) -> None:
    run = Workflow("frees-state").step("a", workload.add).run(inputs={"x": 1, "y": 2})
    assert run.wait(timeout=30) == 3
    client = default_services().state.client
    eventually(lambda: client.get(run_key(run.id, "ctl")) == b"succeeded", what="the end flag")
    assert not client.exists(run_key(run.id, "res"), run_key(run.id, "deliveries"))
    assert 0 < client.ttl(run_key(run.id, "ctl")) <= default_services().state.ended_ttl


def test_a_missing_parent_result_is_an_error_not_none(servers: dict[str, str]) -> None:
    state = default_services().state
    run_id = str(uuid.uuid4())
    state.init_run(run_id, {}, {"a": 1})
    claim = state.claim(run_id, "c", 1, "me", 1000, ["a", "b"])
    assert (claim.outcome, claim.flag) == ("missing", "b")
    # and nothing was taken: no lease, no delivery counted
    assert not state.lease_alive(run_id, "c", 1)


def test_lease_renewal_recreates_a_lease_redis_lost(servers: dict[str, str]) -> None:
    state = default_services().state
    run_id = str(uuid.uuid4())
    mine, theirs = run_key(run_id, "lease:a:1"), run_key(run_id, "lease:b:1")
    state.client.set(theirs, "other", px=5000)
    assert state.renew({(run_id, "a", 1): "me", (run_id, "b", 1): "me"}, 5000) == 1
    assert state.client.get(mine) == b"me" and state.client.get(theirs) == b"other"


# -- recovery ---------------------------------------------------------------------------------


@pytest.fixture
def parked_run(servers: dict[str, str]) -> Iterator[Callable[[], str]]:
    """Factory: a published run of one step on a queue no worker consumes."""

    def make() -> str:
        return Workflow("parked").step("a", workload.noop, queue="nowhere").run().id

    yield make


def test_recovery_ends_a_run_whose_failure_never_reached_history(
    parked_run: Callable[[], str],
) -> None:
    # Given a run that Redis says failed at step a, while history still shows it unfinished
    rt = default_services()
    run_id = parked_run()
    rt.state.fail(run_id, "a", "ValueError: boom")
    # When the reconciler looks at it
    assert recover_run(rt, run_id, "test") is None
    # Then the run is failed at a, not recovered over and over
    record = rt.history.get_run(run_id)
    assert record is not None and (record.status, record.error_step) == ("failed", "a")
    assert [s.status for s in rt.history.get_steps(run_id)] == ["failed"]


def test_a_broker_error_during_recovery_does_not_fail_the_run(
    parked_run: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = default_services()
    run_id = parked_run()

    def refused(self: CanvasBuilder, segment: Any) -> None:
        raise ConnectionRefusedError("broker restarting")

    monkeypatch.setattr(CanvasBuilder, "publish", refused)
    with pytest.raises(ConnectionRefusedError):
        recover_run(rt, run_id, "test")
    record = rt.history.get_run(run_id)
    assert record is not None and record.status == "pending"


def test_recovery_waits_for_a_step_still_running_elsewhere(parked_run: Callable[[], str]) -> None:
    rt: Services = default_services()
    run_id = parked_run()
    rt.writer.submit(
        StepEvent(run_id, "a", 1, StepStatus.RUNNING, datetime.datetime.now(datetime.UTC))
    )
    rt.writer.flush()
    rt.state.client.set(run_key(run_id, "lease:a:1"), "elsewhere", px=10_000)
    assert recover_run(rt, run_id, "test") is None
    rt.state.client.delete(run_key(run_id, "lease:a:1"))
    assert recover_run(rt, run_id, "test") == 1


def test_a_retry_lost_after_the_delay_pump_took_it_is_published_again(
    start_worker: Callable[..., Any],
) -> None:
    # Given a worker whose retry delays over 1 s wait in Redis's sorted set
    start_worker(
        "late",
        concurrency=1,
        args=("-Q", "late"),
        env={
            "ORCHESTRATOR_VISIBILITY_TIMEOUT": "2",
            "ORCHESTRATOR_LEASE_SECONDS": "1",
            "ORCHESTRATOR_RECONCILE_INTERVAL": "0.5",
        },
    )
    key = _key()
    wf = Workflow("lost-retry").step(
        "s",
        workload.flaky,
        kwargs={"key": key, "succeed_on": 2},
        queue="late",
        retry={"max_attempts": 2, "base_delay": 2.0, "jitter": False},
    )
    run = wf.run()
    client = default_services().state.client
    # When the delayed attempt is taken from the set and never published (its process died)
    taken = eventually(lambda: client.zrange("orch:delayed", 0, -1), 10, "the delayed attempt")
    assert client.zrem("orch:delayed", *taken) == len(taken)
    # Then the reconciler publishes it again once overdue (by a lease period of the leading
    # worker: 30 s for the shared worker's defaults), and the run ends
    assert run.wait(timeout=75) == 2
    assert _attempts(key) == [1, 2]
    assert any(kind == "republished" for _, kind, _ in run.events())


def test_run_workflow_of_a_typed_input_round_trips(worker: Any) -> None:
    run = run_workflow(Workflow("typed-input").step("a", workload.add), {"x": 2, "y": 3})
    started = time.monotonic()
    assert run.wait(timeout=30) == 5
    assert time.monotonic() - started < 30


# -- control: one order, one retry ------------------------------------------------------------


def test_racing_pause_and_resume_leave_history_and_redis_agreeing(
    parked_run: Callable[[], str],
) -> None:
    import threading

    from orchestrator import get_run
    from orchestrator.errors import InvalidTransition

    rt = default_services()
    run = get_run(parked_run())
    for _ in range(30):
        barrier = threading.Barrier(2)

        def act(action: Callable[[], bool], barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            with contextlib.suppress(InvalidTransition):
                action()

        threads = [threading.Thread(target=act, args=(a,)) for a in (run.pause, run.resume)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flag = rt.state.client.get(run_key(run.id, "ctl"))
        assert (run.status() == "paused") == (flag == b"paused"), (run.status(), flag)


def test_retry_waits_for_running_steps_and_happens_once(worker: Any) -> None:
    from orchestrator.errors import InvalidTransition

    # Given a run that failed while a parallel branch still runs
    wf = Workflow("retry-while-running")
    wf.step("slow", workload.sleepy, kwargs={"seconds": 5})
    wf.step("bad", workload.boom, kwargs={"seconds": 1})
    run = wf.run()
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)
    assert {s.step_id: s.status for s in run.steps()}["slow"] == "running"
    # When it is retried at once, Then it is refused: the branch's effect would happen twice
    with pytest.raises(InvalidTransition, match="still has steps running"):
        run.retry()
    # Once the branch ended, a retry runs only what did not succeed, and a second retry (or a
    # second replay of its dead letter) gives the same run
    eventually(lambda: {s.step_id: s.status for s in run.steps()}["slow"] == "succeeded", 15)
    first, second = run.retry(), run.retry()
    assert first.id == second.id
    steps = {s.step_id: s.status for s in first.steps()}
    assert steps["slow"] == "succeeded"


def test_a_dead_letter_is_replayed_once(worker: Any) -> None:
    from orchestrator.cli import main

    run = Workflow("replay-once").step("bad", workload.boom).run()
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)
    letter = eventually(
        lambda: [d for d in default_services().history.dead_letters() if str(d.run_id) == run.id]
    )[0]
    assert main(["dlq", "replay", str(letter.id)]) == 0
    assert main(["dlq", "replay", str(letter.id)]) == 1  # "already replayed", on stderr
    retries = [
        r for r in default_services().history.list_runs("replay-once") if r.parent_run_id == run.id
    ]
    assert len(retries) == 1


def test_a_backlog_is_not_taken_for_a_stall_but_a_lost_message_is(
    parked_run: Callable[[], str],
) -> None:
    from orchestrator.ops.reconciler import Reconciler
    from orchestrator.settings import Settings

    # Given a reconciler with a 1 s stall timeout, and a run whose step waits in its queue
    rt = services_of(create_app(Settings(stall_timeout=1.0)))
    run_id = parked_run()
    time.sleep(1.5)
    reconciler = Reconciler(rt)
    # When the run has not moved for longer than the stall timeout while its queue holds messages
    # Then it is waiting its turn in a backlog: nothing is published again
    assert reconciler._recover_stalled() == 0
    # But once the queue is empty (the message was lost), the run is recovered
    with rt.app.connection_for_write() as conn:
        conn.default_channel.queue_purge("nowhere")
    assert reconciler._recover_stalled() >= 1  # this run (and any other parked one)
    assert [kind for _, kind, _ in rt.history.events(run_id)] == ["recovered"]


def test_the_reconciler_finishes_a_run_whose_output_is_typed(parked_run: Callable[[], str]) -> None:
    from orchestrator.ops.reconciler import Reconciler

    # Given a run whose only step succeeded with a datetime, but whose end was never written
    rt = default_services()
    run_id = parked_run()
    at = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC)
    rt.writer.submit(StepEvent(run_id, "a", 1, StepStatus.SUCCEEDED, at, result={"at": at}))
    rt.writer.flush()
    # When the reconciler finishes settled runs, Then the run succeeds with the typed output
    assert Reconciler(rt)._finish_settled() >= 1
    record = rt.history.get_run(run_id)
    assert record is not None and (record.status, record.output) == ("succeeded", {"at": at})


def test_a_late_copy_of_an_attempt_that_already_ran_is_stale(servers: dict[str, str]) -> None:
    # Given attempt 2 of a step failed and scheduled attempt 3 (a copy of 2 was published again)
    state = default_services().state
    run_id = str(uuid.uuid4())
    state.init_run(run_id, {}, {})
    state.expect_retry(run_id, "s", 3, {"task": "x"}, time.time())
    # When the late copy of attempt 2 is delivered, Then it does not run again
    assert state.claim(run_id, "s", 2, "late-copy", 1000, []).outcome == "stale"
    assert state.claim(run_id, "s", 3, "next", 1000, []).outcome == "go"


# -- a run that ended leaves no step behind ---------------------------------------------------


def test_a_failed_run_skips_every_step_not_started(worker: Any) -> None:
    # Given a run whose other branch waits in a queue no worker consumes
    wf = Workflow("fail-skips-all")
    wf.step("bad", workload.boom)
    wf.step("other", workload.noop, queue="nowhere")
    run = wf.run()
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=30)
    # Then nothing new starts: the branch that never started is skipped, not left pending
    assert {s.step_id: s.status for s in run.steps()} == {"bad": "failed", "other": "skipped"}


def test_a_step_failing_after_its_run_was_cancelled_is_not_retried(worker: Any) -> None:
    wf = Workflow("cancel-then-fail").step(
        "s",
        workload.boom,
        kwargs={"seconds": 2},
        retry={"max_attempts": 3, "base_delay": 0.05, "jitter": False},
    )
    run = wf.run()
    eventually(lambda: run.steps()[0].status == "running", 15, "the step running")
    assert run.cancel()
    step = eventually(
        lambda: next((s for s in run.steps() if s.status == "failed"), None), 15, "its failure"
    )
    time.sleep(1.0)
    assert (run.status(), step.attempts, run.steps()[0].status) == ("cancelled", 1, "failed")


def test_a_running_step_of_an_ended_run_whose_worker_died_is_failed(
    parked_run: Callable[[], str],
) -> None:
    from orchestrator.ops.reconciler import Reconciler
    from orchestrator.settings import Settings

    # Given a failed run with a step recorded running whose process died (no lease)
    rt = services_of(create_app(Settings(lease_seconds=0.5)))
    run_id = parked_run()
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=30)
    rt.writer.submit(StepEvent(run_id, "a", 1, StepStatus.RUNNING, long_ago))
    rt.writer.flush()
    rt.history.fail_run(run_id, "another step failed")
    reconciler = Reconciler(rt)
    # When the reconciler has seen its lease missing for a lease period
    assert reconciler._end_orphans() == 0
    time.sleep(0.6)
    # Then the step ends as failed
    assert reconciler._end_orphans() == 1
    assert [s.status for s in rt.history.get_steps(run_id)] == ["failed"]


def test_a_step_skipped_by_its_runs_failure_that_did_run_records_its_outcome(
    parked_run: Callable[[], str],
) -> None:
    from orchestrator.records import RunFinal

    # Given a run failed while a step's events were still on their way (it looks unstarted)
    rt = default_services()
    run_id = parked_run()
    at = datetime.datetime.now(datetime.UTC)
    rt.writer.submit(RunFinal(run_id, RunStatus.FAILED, at, error="boom", error_step="other"))
    rt.writer.flush()
    assert [s.status for s in rt.history.get_steps(run_id)] == ["skipped"]
    # When its events arrive, Then its real outcome is recorded (a retry keeps its result)
    rt.writer.submit(StepEvent(run_id, "a", 1, StepStatus.RUNNING, at))
    rt.writer.submit(StepEvent(run_id, "a", 1, StepStatus.SUCCEEDED, at, result=7))
    rt.writer.flush()
    step = rt.history.get_steps(run_id)[0]
    assert (step.status, step.result, step.attempts) == ("succeeded", 7, 1)
