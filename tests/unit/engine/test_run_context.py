"""A run's shared context on the in-memory twins: steps set and read keys, the context is kept
in history (read there once the live copy is gone), and bad keys, values that are not JSON and
a context past its bound are refused with nothing written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from orchestrator import ContextError, Workflow, current_run, task
from orchestrator.engine.run_context import SharedContext
from orchestrator.records import ContextEvent
from orchestrator.settings import Settings
from orchestrator.stores.memory.context import MemoryRunContext
from orchestrator.testing import run_inline
from tests.unit.engine.harness import SETTINGS, Engine


@task
def remember(start: int) -> int:
    current_run.context.set("start", start)
    current_run.context.set("price", Decimal("1.50"))
    return start


@task
def left(value: int) -> str:
    current_run.context.set("left", value + 1)
    return "left"


@task
def right(value: int) -> str:
    current_run.context.set("right", {"seen": current_run.context.get("start")})
    return "right"


@task
def report(parents: dict[str, str]) -> dict[str, Any]:
    ctx = current_run.context
    return {"left": ctx.get("left"), "right": ctx.get("right"), "none": ctx.get("x", "dflt")}


SHARED = (
    Workflow("unit_context")
    .step("a", remember)
    .step("l", left, after="a")
    .step("r", right, after="a")
    .step("z", report, after=["l", "r"])
)


def test_steps_share_the_context_and_run_context_returns_it() -> None:
    run = run_inline(SHARED, {"start": 4}, settings=SETTINGS)

    assert run.wait() == {"left": 5, "right": {"seen": 4}, "none": "dflt"}
    assert run.context() == {
        "start": 4,
        "price": Decimal("1.50"),
        "left": 5,
        "right": {"seen": 4},
    }


def test_history_keeps_the_context_and_is_read_once_the_live_copy_is_gone(
    engine: Engine,
) -> None:
    run = engine.start(SHARED, {"start": 1})
    engine.finish(run)
    live = engine.rt.contexts
    assert isinstance(live, MemoryRunContext)

    live.forget(run.id)  # as Redis forgets it after result_expires

    assert engine.history.run_context(run.id) == run.context()
    assert run.context()["right"] == {"seen": 1}


def test_history_keeps_the_latest_version_whatever_order_events_arrive_in() -> None:
    engine = Engine()
    try:
        run = engine.start(SHARED, {"start": 1})
        history = engine.history
        newer = ContextEvent(run.id, 7, {"k": '"new"', "j": "1"}, history.clock())
        older = ContextEvent(run.id, 3, {"k": '"old"'}, history.clock())

        engine.rt.writer.submit(newer)
        engine.rt.writer.submit(older)

        assert history.run_context(run.id) == {"k": "new", "j": 1}
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("k", object(), "is not JSON data"),
        ("k", float("nan"), "is not JSON data"),
        ("", 1, "is not a string"),
        (7, 1, "is not a string"),
    ],
)
def test_bad_keys_and_values_are_refused_and_nothing_is_written(
    engine: Engine, key: Any, value: Any, says: str
) -> None:
    run = engine.start(SHARED, {"start": 1})
    shared = SharedContext(engine.rt, run.id, "unit_context", "a")

    with pytest.raises(ContextError, match=says) as raised:
        shared.set(key, value)

    assert run.id in str(raised.value) and "'a'" in str(raised.value)
    assert engine.rt.contexts.values(run.id) is None
    assert engine.history.run_context(run.id) is None


def test_a_context_past_its_bound_is_refused_and_keeps_what_it_had() -> None:
    settings = Settings(**{**SETTINGS.model_dump(), "context_max_bytes": 64})
    engine = Engine()
    try:
        engine.rt.settings = settings
        run = engine.start(SHARED, {"start": 1})
        shared = SharedContext(engine.rt, run.id, "unit_context", "a")
        shared.set("small", "x" * 20)

        with pytest.raises(ContextError, match="past 64 bytes"):
            shared.set("big", "y" * 60)

        assert run.context() == {"small": "x" * 20}
        shared.set("small", "z" * 30)  # replacing a key counts its new size only
        assert shared.get("small") == "z" * 30
    finally:
        engine.close()


def test_current_run_context_outside_a_step_says_so() -> None:
    with pytest.raises(RuntimeError, match="only available inside a step"):
        current_run.context.get("k")


def test_after_redis_lost_a_running_runs_context_history_keeps_its_earlier_keys(
    engine: Engine,
) -> None:
    run = engine.start(SHARED, {"start": 1})
    shared = SharedContext(engine.rt, run.id, "unit_context", "a")
    shared.set("first", 1)
    live = engine.rt.contexts
    assert isinstance(live, MemoryRunContext)

    live.forget(run.id)  # Redis restarted without its data while the run goes on
    later = SharedContext(engine.rt, run.id, "unit_context", "b")
    later.set("second", 2)

    assert later.get("first") == 1  # read from history
    assert run.context() == {"first": 1, "second": 2}
