"""Unit tests for orchestrator.engine.canvas: plan segments become Celery chain, group and chord."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from celery import Celery
from celery.canvas import Signature, _chain, chord, group

from orchestrator.core.planner import build_plan
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.canvas import CTX_KEY, CanvasBuilder, task_id

RUN_ID = "6f1c2b1e-5a4d-4c3b-8a29-0123456789ab"
INPUTS = {"source": "s3://bucket/day"}

Builder = Callable[..., CanvasBuilder]


def spec_of(steps: list[dict[str, Any]], name: str = "etl") -> WorkflowSpec:
    return WorkflowSpec(name=name, steps=[{"task": f"t.{s['id']}", **s} for s in steps])


def diamond() -> WorkflowSpec:
    return spec_of(
        [
            {"id": "a"},
            {"id": "b", "after": "a", "queue": "cpu", "timeout": 30, "soft_timeout": 20},
            {"id": "c", "after": "a", "options": {"priority": 7}},
            {"id": "d", "after": ["b", "c"], "kwargs": {"table": "facts"}},
        ]
    )


def ladder(rungs: int) -> WorkflowSpec:
    steps: list[dict[str, Any]] = [{"id": "a0"}]
    for i in range(rungs):
        steps += [{"id": f"b{i}", "after": f"a{i}"}, {"id": f"c{i}", "after": f"a{i}"}]
        steps.append({"id": f"a{i + 1}", "after": [f"b{i}", f"c{i}"]})
    return spec_of(steps, name="ladder")


def dummy(*args: Any, **kwargs: Any) -> None:
    return None


@pytest.fixture
def app() -> Celery:
    return Celery("t", set_as_current=False)


@pytest.fixture
def builder(app: Celery) -> Builder:
    """A CanvasBuilder for a spec, with a dummy task registered for every step's task name."""

    def make(spec: WorkflowSpec, run_id: str = RUN_ID, limit: int | None = None, **kw: Any):
        for step in spec.steps:
            if step.task not in app.tasks:
                app.task(name=step.task)(dummy)
        plan = build_plan(spec) if limit is None else build_plan(spec, limit=limit)
        return CanvasBuilder(app, spec, plan, run_id, kw.pop("inputs", INPUTS), **kw)

    return make


def by_step(sig: Signature) -> dict[str, Signature]:
    """Every task signature in a canvas, keyed by its step id."""
    if isinstance(sig, _chain):
        return {k: v for t in sig.tasks for k, v in by_step(t).items()}
    if isinstance(sig, chord):
        return {**by_step(group(sig.tasks)), **by_step(sig.body)}
    if isinstance(sig, group):
        return {k: v for t in sig.tasks for k, v in by_step(t).items()}
    return {sig.kwargs[CTX_KEY]["step_id"]: sig}


def test_a_diamond_becomes_a_chain_of_a_and_a_chord(builder: Builder) -> None:
    # Given a -> (b, c) -> d / When its only segment is built
    b = builder(diamond())
    (segment,) = b.plan.segments
    sig = b.segment(segment)
    # Then it is chain(a, chord(group(b, c), d))
    assert isinstance(sig, _chain) and len(sig.tasks) == 2
    first, second = sig.tasks
    assert first.task == "t.a"
    assert isinstance(second, chord)
    assert [t.task for t in second.tasks] == ["t.b", "t.c"]
    assert second.body.task == "t.d"


def test_task_ids_are_uuid5_of_run_and_step_and_stable(builder: Builder) -> None:
    # Given the same run built twice by different builders (client and a worker)
    once, twice = (
        by_step(builder(diamond()).segment(builder(diamond()).plan.segments[0])) for _ in range(2)
    )
    other = by_step(
        builder(diamond(), run_id=str(uuid.uuid4())).build(build_plan(diamond()).segments[0].body)
    )
    # Then every step's id is uuid5(run, step), equal across builds and distinct per run
    for step, sig in once.items():
        assert sig.id == task_id(RUN_ID, step) == str(uuid.uuid5(uuid.UUID(RUN_ID), step))
        assert twice[step].id == sig.id and other[step].id != sig.id
    assert len({s.id for s in once.values()}) == 4


def test_each_signature_carries_its_context(builder: Builder) -> None:
    # Given a built diamond / Then each signature names its run, step, workflow and version
    b = builder(diamond())
    for step, sig in by_step(b.segment(b.plan.segments[0])).items():
        assert sig.kwargs[CTX_KEY] == {
            "run_id": RUN_ID,
            "step_id": step,
            "workflow": "etl",
            "version": diamond().version,
        }


def test_a_resumed_run_says_so_in_its_context(builder: Builder) -> None:
    # Given a builder for a retried run / Then the context is flagged as resumed
    b = builder(diamond(), resumed=True)
    assert b.signature("a").kwargs[CTX_KEY]["resumed"] is True


def test_roots_get_the_inputs_and_other_steps_only_their_kwargs(builder: Builder) -> None:
    # Given a diamond built with run inputs
    sigs = by_step(builder(diamond()).build(build_plan(diamond()).segments[0].body))
    # Then the root is called with the inputs; d with its static kwargs; b and c with neither
    assert sigs["a"].kwargs == {**INPUTS, CTX_KEY: sigs["a"].kwargs[CTX_KEY]}
    assert sigs["d"].kwargs == {"table": "facts", CTX_KEY: sigs["d"].kwargs[CTX_KEY]}
    assert set(sigs["b"].kwargs) == set(sigs["c"].kwargs) == {CTX_KEY}
    assert all(s.args == () for s in sigs.values())


def test_static_kwargs_of_a_root_win_over_inputs(builder: Builder) -> None:
    # Given a root whose static kwargs repeat an input / Then the static value is used
    spec = spec_of([{"id": "a", "kwargs": {"source": "fixed", "limit": 3}}])
    sig = builder(spec).signature("a")
    assert sig.kwargs["source"] == "fixed" and sig.kwargs["limit"] == 3


def test_only_chained_steps_receive_the_previous_result(builder: Builder) -> None:
    # Given a diamond: b and c are chained from a; a (inputs) and d (fetch) are not
    b = builder(diamond())
    sigs = by_step(b.segment(b.plan.segments[0]))
    # Then chained signatures are mutable, every other one immutable
    assert {s: sig.immutable for s, sig in sigs.items()} == {
        "a": True,
        "b": False,
        "c": False,
        "d": True,
    }
    assert {s: p.mode for s, p in b.plan.steps.items()}["d"] == "fetch"


def test_a_join_segment_is_one_immutable_task(builder: Builder) -> None:
    # Given the N shape a -> c, a -> d, b -> d
    spec = spec_of(
        [{"id": "a"}, {"id": "b"}, {"id": "c", "after": "a"}, {"id": "d", "after": ["a", "b"]}]
    )
    b = builder(spec)
    start, join = (b.segment(seg) for seg in b.plan.segments)
    # Then the start canvas is group(chain(a, c), b) and the join is d alone, fetching
    assert isinstance(start, group)
    assert [type(t).__name__ for t in start.tasks] == ["_chain", "Signature"]
    assert [t.task for t in start.tasks[0].tasks] == ["t.a", "t.c"]
    assert join.task == "t.d" and join.immutable and join.kwargs.keys() == {CTX_KEY}


def test_step_options_reach_the_signature(builder: Builder) -> None:
    # Given steps with a queue, time limits and a free-form Celery option
    sigs = by_step(builder(diamond()).build(build_plan(diamond()).segments[0].body))
    # Then they are Celery options: queue, time_limit, soft_time_limit, priority
    assert sigs["b"].options["queue"] == "cpu"
    assert sigs["b"].options["time_limit"] == 30
    assert sigs["b"].options["soft_time_limit"] == 20
    assert sigs["c"].options["priority"] == 7
    assert "queue" not in sigs["a"].options and "time_limit" not in sigs["a"].options


def test_a_signature_is_json_serializable(builder: Builder) -> None:
    # Given a built segment / When serialized for the broker (JSON only) / Then it round-trips
    b = builder(diamond())
    sig = b.segment(b.plan.segments[0])
    assert json.loads(json.dumps(sig)) == json.loads(json.dumps(dict(sig)))


def test_a_500_step_ladder_is_published_in_small_pieces(builder: Builder) -> None:
    # Given a ladder of 166 diamonds (499 steps)
    spec = ladder(166)
    segmented, raw = builder(spec), builder(spec, limit=10**9)
    # When each segment is built and serialized
    sizes = [len(json.dumps(segmented.segment(seg))) for seg in segmented.plan.segments]
    (whole,) = raw.plan.segments
    raw_size = len(json.dumps(raw.segment(whole)))
    # Then every piece stays small, and the unsegmented canvas is several times larger
    assert len(spec.steps) == 499
    assert max(sizes) < 40_000
    assert raw_size > 5 * max(sizes)
    assert sum(len(by_step(segmented.segment(s))) for s in segmented.plan.segments) == 499
