"""``async def`` steps: the event loop they run on, and workflows of them run inline."""

from __future__ import annotations

import asyncio
import inspect
import os
import select
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from billiard.pool import soft_timeout_sighandler
from celery.exceptions import SoftTimeLimitExceeded

from orchestrator import Workflow, circuit_breaker, current_run, retry, task
from orchestrator.app import get_app
from orchestrator.context import RunContext, reset_current, set_current
from orchestrator.engine.event_loop import EventLoopThread
from orchestrator.engine.services import CeleryCatalog
from orchestrator.errors import InputError
from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(task_modules=["tasks"], workflows_path=str(ROOT / "config" / "workflows"))


@task
@retry(max_attempts=3, base_delay=30.0, jitter=False, on=ConnectionError)
async def fetch(url: str, fails: int = 0) -> str:
    await asyncio.sleep(0)
    if current_run.attempt <= fails:
        raise ConnectionError(f"attempt {current_run.attempt} refused")
    return f"{url} at attempt {current_run.attempt} of {current_run.step_id}"


@task
async def shout(text: str) -> str:
    await asyncio.sleep(0)
    return text.upper()


@task
@retry(max_attempts=2, base_delay=1.0, jitter=False)
@circuit_breaker("async-warehouse", failure_threshold=1, reset_timeout=600.0)
async def load(url: str) -> str:
    await asyncio.sleep(0)
    if current_run.attempt == 1:
        raise ConnectionError("warehouse down")
    return "loaded"


def step_of(run: Any, step_id: str) -> Any:
    return next(s for s in run.steps() if s.step_id == step_id)


@pytest.fixture
def loop() -> Iterator[EventLoopThread]:
    made = EventLoopThread("test-event-loop")
    yield made
    made.close()


@pytest.fixture
def soft_limit() -> Iterator[Any]:
    """``start(seconds)``: SIGUSR1 to this process after ``seconds``, raising Celery's
    ``SoftTimeLimitExceeded`` in the main thread, as a prefork pool process's soft limit does."""
    previous = signal.signal(signal.SIGUSR1, soft_timeout_sighandler)
    timers: list[threading.Timer] = []

    def start(seconds: float) -> None:
        timers.append(threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGUSR1)))
        timers[-1].start()

    yield start
    for timer in timers:
        timer.cancel()
        timer.join()
    signal.signal(signal.SIGUSR1, previous)


# -- the loop -------------------------------------------------------------------------------


def test_a_coroutine_runs_on_the_loops_thread_and_its_result_or_error_comes_back(
    loop: EventLoopThread,
) -> None:
    async def where() -> str:
        await asyncio.sleep(0)
        return threading.current_thread().name

    async def fail() -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    assert [loop.run(where()), loop.run(where())] == ["test-event-loop"] * 2
    with pytest.raises(KeyError, match="missing"):
        loop.run(fail())


def test_the_steps_current_run_is_visible_inside_the_coroutine(loop: EventLoopThread) -> None:
    # Given a step's context bound in the calling thread, as a step binds it
    token = set_current(RunContext("r1", "fetch", 2, "wf", "t1", dict))
    try:
        # When a coroutine run on the loop reads current_run
        async def read() -> str:
            key: str = current_run.idempotency_key
            return key

        seen = loop.run(read())
    finally:
        reset_current(token)
    # Then it sees the step's context
    assert seen == "r1:fetch:2"


def test_the_soft_time_limit_cancels_the_coroutine_which_cleans_up(
    loop: EventLoopThread, soft_limit: Any
) -> None:
    # Given a coroutine that would run for 10 s, and a soft time limit of 0.2 s
    cleaned: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("cleaned")

    soft_limit(0.2)
    started = time.monotonic()
    # When the limit strikes while the caller waits for it
    with pytest.raises(SoftTimeLimitExceeded):
        loop.run(slow())
    # Then the coroutine was cancelled and had ended before the caller saw the limit
    assert cleaned == ["cleaned"] and time.monotonic() - started < 5
    # And the loop still runs what comes next
    assert loop.run(asyncio.sleep(0, result="next")) == "next"


def test_a_coroutine_that_handles_its_cancellation_gives_its_own_result(
    loop: EventLoopThread, soft_limit: Any
) -> None:
    async def patient() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "partial"
        return "whole"

    soft_limit(0.2)

    assert loop.run(patient()) == "partial"


def test_coroutines_of_two_threads_run_on_the_loop_at_the_same_time(
    loop: EventLoopThread,
) -> None:
    # Given two coroutines that each wait until both have arrived
    barrier = asyncio.Barrier(2)
    met: list[str] = []

    async def meet(name: str) -> None:
        await asyncio.wait_for(barrier.wait(), 5)
        met.append(name)

    # When two threads (a worker's -P threads) run one each
    threads = [threading.Thread(target=loop.run, args=(meet(n),)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # Then both met: neither blocked the loop while it waited
    assert sorted(met) == ["a", "b"]


def test_calling_an_async_task_from_a_coroutine_on_its_loop_is_refused(
    loop: EventLoopThread,
) -> None:
    async def nested() -> str:
        return loop.run(asyncio.sleep(0, result="never"))

    with pytest.raises(RuntimeError, match="would wait for itself"):
        loop.run(nested())


def test_a_forked_child_runs_async_tasks_on_a_loop_of_its_own() -> None:
    # Given this process's event loop, started by a plain call of an async task
    assert shout("parent") == "PARENT"
    read, write = os.pipe()
    # When a child is forked (as prefork forks its pool) and calls an async task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
        pid = os.fork()
    if pid == 0:
        try:
            os.write(write, shout("child").encode())
        finally:
            os._exit(0)
    os.close(write)
    # Then it gets its result (the parent's loop thread does not exist in the child)
    try:
        ready, _, _ = select.select([read], [], [], 10)
        answer = os.read(read, 100) if ready else b""
    finally:
        os.close(read)
        if not answer:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert answer == b"CHILD"


# -- async tasks and workflows --------------------------------------------------------------


def test_an_async_task_has_its_functions_signature_and_a_plain_call_returns_its_result() -> None:
    expected = "(url: 'str', fails: 'int' = 0) -> 'str'"  # annotations are strings here
    assert str(inspect.signature(fetch.run)) == expected
    assert str(CeleryCatalog(get_app()).signature_of(fetch.name)) == expected
    assert shout("hi") == shout.run("hi") == "HI"


def test_inputs_an_async_step_cannot_take_are_refused_at_validation() -> None:
    wf = Workflow("async_checked").step("fetch", fetch)

    with pytest.raises(InputError, match="fetch"):
        run_inline(wf, {"address": "u"}, settings=SETTINGS)


def test_an_async_step_is_retried_and_passes_its_result_on() -> None:
    # Given an async step that fails twice with a retryable error, before another async step
    wf = Workflow("async_retrying").step("fetch", fetch).step("show", shout, after="fetch")
    # When it runs inline
    run = run_inline(wf, {"url": "u", "fails": 2}, settings=SETTINGS)
    # Then it succeeded at its third attempt, and the next step got its result
    assert run.wait() == "U AT ATTEMPT 3 OF FETCH"
    assert [(a.attempt, a.status) for a in step_of(run, "fetch").attempt_log] == [
        (1, StepStatus.RETRYING),
        (2, StepStatus.RETRYING),
        (3, StepStatus.SUCCEEDED),
    ]


def test_an_async_step_behind_a_breaker_is_retried_once_the_breaker_allows() -> None:
    # Given an async step whose first failure opens its breaker for 10 minutes
    run = run_inline(Workflow("async_guarded").step("load", load), {"url": "u"}, settings=SETTINGS)
    # Then its retry, deferred until the breaker half-opened, succeeded as its trial call
    assert (run.status(), run.wait()) == (RunStatus.SUCCEEDED, "loaded")
    assert [(a.attempt, a.status) for a in step_of(run, "load").attempt_log] == [
        (1, StepStatus.RETRYING),
        (2, StepStatus.SUCCEEDED),
    ]
