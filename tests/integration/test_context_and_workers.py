"""A run's shared context, what waiting steps wait for, and the registry of workers, with real
workers, Redis and PostgreSQL: two parallel steps in two pool processes set different keys and
both land; the context is read from history once Redis no longer has it; ``run.pending()`` says
paused, retry_delay, breaker, queue and child_run; ``orchestrator.workers()`` lists a worker
with the step it runs, and a SIGKILLed one as lost within the bound, its run recovered."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

import orchestrator
from orchestrator import Workflow, WorkflowFailed
from orchestrator.app import default_services
from orchestrator.cli import main
from orchestrator.engine.handle import RunHandle
from orchestrator.records import HEARTBEAT_EVERY, LOST_AFTER, ContextEvent, StepRecord, WorkerInfo
from orchestrator.status import RunStatus, StepStatus
from orchestrator.stores.redis.run_keys import key as run_key
from orchestrator.testing.workers import Worker
from tests.integration import context_tasks as ct
from tests.integration import workload
from tests.integration.conftest import SETTINGS
from tests.integration.waiting import eventually

pytestmark = pytest.mark.integration
NOBODY = "ctx-nobody"  # a queue no worker consumes
ENV = {
    "ORCHESTRATOR_TASK_MODULES": SETTINGS["ORCHESTRATOR_TASK_MODULES"]
    + ",tests.integration.context_tasks",
    "ORCHESTRATOR_LEASE_SECONDS": "2",
    "ORCHESTRATOR_RECONCILE_INTERVAL": "0.5",
}


def _key() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def ctx_worker(start_worker: Callable[..., Worker]) -> Iterator[Worker]:
    """A two-process worker consuming only the ``ctx`` queue, with this module's tasks."""
    worker = start_worker("ctx", concurrency=2, env=ENV, args=("-Q", ct.QUEUE))
    yield worker
    worker.stop()


def _step(run: RunHandle, step_id: str) -> StepRecord:
    """The step as ``pending()`` lists it (a run that ended lists nothing: fail at once)."""
    found = next((s for s in run.pending() if s.step_id == step_id), None)
    assert found is not None, f"{step_id} has ended: {run.steps()}"
    return found


def _named(worker: Worker) -> Callable[[], WorkerInfo | None]:
    def find() -> WorkerInfo | None:
        return next(
            (w for w in orchestrator.workers() if w.name.startswith(f"{worker.name}@")), None
        )

    return find


# -- context ------------------------------------------------------------------------------------


def test_parallel_steps_set_different_keys_and_both_land(ctx_worker: Worker) -> None:
    key = _key()
    wf = (
        Workflow("ctx-parallel")
        .step("a", ct.begin, queue=ct.QUEUE)
        .step("left", ct.meet_and_set, after="a", kwargs={"side": "left"}, queue=ct.QUEUE)
        .step("right", ct.meet_and_set, after="a", kwargs={"side": "right"}, queue=ct.QUEUE)
        .step("z", ct.read_back, after=["left", "right"], queue=ct.QUEUE)
    )
    run = wf.run(inputs={"key": key})

    seen = run.wait(timeout=60)

    context = run.context()
    assert set(context) == {"begun", "left", "right"}
    assert context["left"]["pid"] != context["right"]["pid"]  # two pool processes, at once
    assert context["left"]["seen"] == context["right"]["seen"] == {"by": "a"}
    assert seen == {"left": context["left"], "right": context["right"]}


def test_the_context_is_read_from_history_once_redis_no_longer_has_it(
    ctx_worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    run = Workflow("ctx-kept").step("a", ct.begin, queue=ct.QUEUE).run(inputs={"key": _key()})
    assert run.wait(timeout=60) is not None
    rt = default_services()
    kept = eventually(lambda: rt.history.run_context(run.id), 10, "the context in history")

    rt.state.client.delete(run_key(run.id, "ctx"), run_key(run.id, "ctxv"))  # expired

    assert kept == {"begun": {"by": "a"}}
    assert run.context() == {"begun": {"by": "a"}}
    assert main(["show", run.id, "--json"]) == 0  # and `orchestrator show` shows it
    assert json.loads(capsys.readouterr().out)["context"] == {"begun": {"by": "a"}}


def test_history_keeps_the_latest_version_whatever_order_writes_arrive_in(
    ctx_worker: Worker,
) -> None:
    run = Workflow("ctx-order").step("a", workload.noop, queue=NOBODY).run()
    rt = default_services()
    now = datetime.now(UTC)
    rt.writer.submit(ContextEvent(run.id, 9, {"k": '"newer"', "j": "1"}, now))
    assert rt.writer.flush(10)
    rt.writer.submit(ContextEvent(run.id, 5, {"k": '"older"'}, now))  # another worker, late
    assert rt.writer.flush(10)

    assert rt.history.run_context(run.id) == {"k": "newer", "j": 1}
    run.cancel()


# -- what steps wait for ------------------------------------------------------------------------


def test_a_step_no_worker_consumes_waits_for_the_queue_and_says_so(ctx_worker: Worker) -> None:
    run = Workflow("ctx-no-queue").step("a", workload.noop, queue=NOBODY).run()
    try:
        a = eventually(lambda: _step(run, "a").waiting_for and _step(run, "a"), 10, "a wait")
        assert a.waiting_for == "queue"
        assert f"queue {NOBODY!r}: no live worker consumes this queue" in (a.waiting_detail or "")
        run.pause()
        assert _step(run, "a").waiting_for == "paused"
    finally:
        run.cancel()
    assert run.pending() == [] or all(s.waiting_for is None for s in run.pending())


def test_a_retrying_step_waits_for_its_delay(ctx_worker: Worker) -> None:
    key = _key()
    wf = Workflow("ctx-retry").step(
        "s",
        workload.flaky,
        kwargs={"key": key, "succeed_on": 2},
        queue=ct.QUEUE,
        retry={"max_attempts": 2, "base_delay": 30.0, "jitter": False},
    )
    run = wf.run()
    try:
        s = eventually(
            lambda: (f := _step(run, "s")).waiting_for == "retry_delay" and f, 20, "retry delay"
        )
        assert s.status == StepStatus.RETRYING
        assert (s.waiting_detail or "").startswith("attempt 2 at ")
        assert "attempt 1 failed" in (s.waiting_detail or "")
    finally:
        run.cancel()


def test_a_step_behind_an_open_breaker_waits_for_it(ctx_worker: Worker) -> None:
    rt = default_services()
    config = ct.behind_breaker.breaker
    rt.breakers.report(config, ok=False, trial=False)  # one failure opens it
    run = Workflow("ctx-breaker").step("a", ct.behind_breaker, queue=ct.QUEUE).run()
    try:
        a = eventually(lambda: _step(run, "a").waiting_for and _step(run, "a"), 10, "a wait")
        assert a.waiting_for == "breaker"
        assert (a.waiting_detail or "").startswith("breaker 'ctx-breaker' open until ")
    finally:
        run.cancel()
        rt.breakers.reset(config.name)


def test_a_step_whose_child_run_is_going_names_it(ctx_worker: Worker) -> None:
    key = _key()
    parent = (
        Workflow("ctx-parent")
        .step("a", ct.child_inputs, queue=ct.QUEUE)
        .step("kid", workflow=ct.CHILD, after="a", queue=ct.QUEUE)
    )
    ct.hold(key)
    try:
        run = parent.run(inputs={"key": key})
        kid = eventually(
            lambda: (f := _step(run, "kid")).waiting_for == "child_run" and f, 30, "child_run"
        )
        [started] = run.children()
        assert kid.status == StepStatus.RUNNING
        named = f"child run {started.id} of workflow 'ctx_child' is "
        assert kid.waiting_detail in (named + "pending", named + "running")
    finally:
        ct.release(key)
    assert run.wait(timeout=60) == "released"
    assert run.pending() == []


# -- workers ------------------------------------------------------------------------------------


def test_workers_are_listed_with_the_steps_they_run(ctx_worker: Worker) -> None:
    key = _key()
    ct.hold(key)
    try:
        run = Workflow("ctx-listed").step("h", ct.held, kwargs={"key": key}, queue=ct.QUEUE).run()
        info = eventually(
            lambda: (w := _named(ctx_worker)()) is not None and (run.id, "h") in w.running and w,
            3 * HEARTBEAT_EVERY,
            "the worker listing the running step",
        )
    finally:
        ct.release(key)
    assert run.wait(timeout=30) == "released"
    assert info.state == "live" and info.queues == (ct.QUEUE,)
    assert info.concurrency == 2 and info.pid == ctx_worker.pid and info.host
    assert info.silent_for <= HEARTBEAT_EVERY + 1


def test_a_killed_worker_is_listed_lost_and_its_run_still_ends(
    start_worker: Callable[..., Worker], ctx_worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker running a step that holds
    key = _key()
    doomed = start_worker("doomed", concurrency=1, env=ENV, args=("-Q", "ctx-doomed"))
    ct.hold(key)
    run = Workflow("ctx-doomed").step("h", ct.held, kwargs={"key": key}, queue="ctx-doomed").run()
    eventually(
        lambda: (w := _named(doomed)()) is not None and (run.id, "h") in w.running,
        3 * HEARTBEAT_EVERY,
        "the doomed worker running the step",
    )
    # When it is SIGKILLed
    doomed.kill()
    killed_at = time.monotonic()
    # Then it is listed lost within the bound (3 missed heartbeats), not dropped
    lost = eventually(
        lambda: (w := _named(doomed)()) is not None and w.lost and w,
        LOST_AFTER + HEARTBEAT_EVERY + 5,
        "the killed worker listed lost",
    )
    took = time.monotonic() - killed_at
    assert lost.state == "lost" and lost.silent_for > LOST_AFTER
    assert took <= LOST_AFTER + HEARTBEAT_EVERY + 5
    assert main(["workers", "--json"]) == 0  # the CLI says so too
    listed = {w["name"]: w for w in json.loads(capsys.readouterr().out)}
    assert listed[lost.name]["state"] == "lost" and listed[lost.name]["pid"] == doomed.pid
    assert [run.id, "h"] in listed[lost.name]["running"]  # what it ran when it went silent
    # And the reconciler recovers its step: a worker on its queue runs it again, the run ends
    survivor = _named(ctx_worker)()
    assert survivor is not None
    control = default_services().app.control
    answer = control.add_consumer("ctx-doomed", destination=[survivor.name], reply=True, timeout=10)
    assert answer, "the surviving worker did not take the killed worker's queue"
    ct.release(key)
    try:
        assert run.wait(timeout=90) == "released"
    except WorkflowFailed as exc:  # pragma: no cover - the message says why
        pytest.fail(f"the killed worker's run failed: {exc}")
    assert run.status() == RunStatus.SUCCEEDED
    assert any(kind == "recovered" for _, kind, _ in run.events()), run.events()
