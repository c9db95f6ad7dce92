"""``for_each``: one call per item, items as steps of their own, results in item order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import Workflow, current_run, retry, task
from orchestrator.core import registry
from orchestrator.core.spec import parse_spec
from orchestrator.errors import ShapeError, UnknownDependencyError, ValidationError
from orchestrator.settings import Settings
from orchestrator.status import RunStatus, StepStatus
from orchestrator.testing import run_inline
from tests.unit.engine.harness import Engine

SETTINGS = Settings(task_modules=[], workflows_path=str(Path(__file__).parent / "no-workflows"))
SEEN: list[tuple[Any, int | None, int]] = []


@task
def listing(count: int, value: Any = None) -> Any:
    return list(range(count)) if value is None else value


@task
def parse(doc: int, prefix: str = "doc") -> str:
    SEEN.append((current_run.item, current_run.item_index, current_run.attempt))
    return f"{prefix}{doc}"


@task
def chunk(text: str) -> list[str]:
    return [f"{text}.a", f"{text}.b"]


@task
def index(chunks: list[list[str]]) -> int:
    return sum(len(c) for c in chunks)


@task
@retry(max_attempts=3, base_delay=1.0, jitter=False)
def flaky(doc: int) -> int:
    if doc % 3 == 0 and current_run.attempt < 2:
        raise ConnectionError(f"doc {doc} refused")
    return doc * 10


FIXED: list[bool] = []
CALLED: list[int] = []


@task
def picky(doc: int) -> int:
    CALLED.append(doc)
    if doc == 2 and not FIXED:
        raise ValueError("doc 2 is unreadable")
    return doc


MAP = (
    Workflow("each_map")
    .step("list", listing)
    .step("parse", parse, for_each="list", kwargs={"prefix": "d"})
)
INGEST = (
    Workflow("each_ingest")
    .step("list", listing)
    .step("parse", parse, for_each="list")
    .step("chunk", chunk, for_each="parse")
    .step("index", index, after="chunk")
)


def statuses(run: Any) -> dict[str, StepStatus]:
    return {s.step_id: s.status for s in run.steps()}


def test_one_call_per_item_results_in_item_order_and_items_recorded() -> None:
    SEEN.clear()
    run = run_inline(MAP, {"count": 3}, settings=SETTINGS)

    assert run.wait() == ["d0", "d1", "d2"]
    assert sorted(SEEN) == [(0, 0, 1), (1, 1, 1), (2, 2, 1)]
    assert statuses(run) == dict.fromkeys(
        ["list", "parse", "parse[0]", "parse[1]", "parse[2]"], StepStatus.SUCCEEDED
    )
    by_id = {s.step_id: s for s in run.steps()}
    assert by_id["parse"].result == ["d0", "d1", "d2"]
    assert by_id["parse[1]"].result == "d1"


def test_a_map_over_a_map_then_a_join_sees_the_list() -> None:
    run = run_inline(INGEST, {"count": 4}, settings=SETTINGS)

    assert run.wait() == 8
    chunks = next(s for s in run.steps() if s.step_id == "chunk")
    assert chunks.result == [
        ["doc0.a", "doc0.b"],
        ["doc1.a", "doc1.b"],
        ["doc2.a", "doc2.b"],
        ["doc3.a", "doc3.b"],
    ]


def test_an_empty_list_gives_an_empty_list_at_once() -> None:
    run = run_inline(INGEST, {"count": 0}, settings=SETTINGS)

    assert run.wait() == 0
    assert statuses(run) == dict.fromkeys(["list", "parse", "chunk", "index"], StepStatus.SUCCEEDED)


def test_items_retry_on_their_own() -> None:
    wf = Workflow("each_retry").step("list", listing).step("x", flaky, for_each="list")
    run = run_inline(wf, {"count": 4}, settings=SETTINGS)

    assert run.wait() == [0, 10, 20, 30]
    attempts = {s.step_id: s.attempts for s in run.steps()}
    assert (attempts["x[0]"], attempts["x[1]"], attempts["x[3]"]) == (2, 1, 2)


def test_a_value_that_is_not_a_list_fails_the_step_naming_it_and_the_type() -> None:
    run = run_inline(MAP, {"count": 0, "value": {"a": 1}}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    parse_step = next(s for s in run.steps() if s.step_id == "parse")
    assert parse_step.status == StepStatus.FAILED
    assert "'parse'" in (parse_step.error or "") and "dict" in (parse_step.error or "")


def test_more_items_than_max_items_fails_the_step() -> None:
    wf = Workflow("each_max").step("list", listing).step("p", parse, for_each="list", max_items=2)
    run = run_inline(wf, {"count": 3}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    assert "max_items=2" in (next(s for s in run.steps() if s.step_id == "p").error or "")


def test_a_failed_item_fails_the_run_and_retry_reruns_only_the_items_that_did_not_succeed(
    engine: Engine,
) -> None:
    FIXED.clear()
    CALLED.clear()
    wf = Workflow("each_partial").step("list", listing).step("p", picky, for_each="list")
    run = engine.start(wf, {"count": 4})
    engine.finish(run)

    assert run.status() == RunStatus.FAILED
    got = statuses(run)
    assert (got["p"], got["p[2]"], got["p[0]"]) == (
        StepStatus.FAILED,
        StepStatus.FAILED,
        StepStatus.SUCCEEDED,
    )
    kept = {i for i in range(4) if got[f"p[{i}]"] == StepStatus.SUCCEEDED}
    assert kept and 2 not in kept
    CALLED.clear()
    FIXED.append(True)

    again = run.retry()
    engine.finish(again)

    assert again.wait() == [0, 1, 2, 3]
    assert 2 in CALLED and not kept & set(CALLED)  # the items that succeeded are not run again


def test_the_max_items_setting_caps_a_fan_out_without_a_max_items_of_its_own() -> None:
    settings = SETTINGS.model_copy(update={"max_items": 2})
    run = run_inline(MAP, {"count": 3}, settings=settings)

    assert run.status() == RunStatus.FAILED
    error = next(s for s in run.steps() if s.step_id == "parse").error or ""
    assert "more than max_items=2" in error and "ORCHESTRATOR_MAX_ITEMS" in error
    assert run_inline(MAP, {"count": 2}, settings=settings).wait() == ["d0", "d1"]


def test_max_items_from_yaml_caps_a_fan_out(tmp_path: Path) -> None:
    doc = tmp_path / "each_yaml_max.yaml"
    doc.write_text(
        "name: each_yaml_max\nsteps:\n"
        f"  - {{id: list, task: {listing.name}}}\n"
        f"  - {{id: p, task: {parse.name}, for_each: list, max_items: 2}}\n"
    )
    spec = registry.load_file(doc)

    run = run_inline(spec, {"count": 3}, settings=SETTINGS)

    assert run.status() == RunStatus.FAILED
    error = next(s for s in run.steps() if s.step_id == "p").error or ""
    assert "'each_yaml_max'" in error and "'p'" in error and "max_items=2" in error


BAD_MAX_ITEMS = [
    ({"max_items": -1}, "greater than or equal to 0"),
    ({"max_items": "ten"}, "valid integer"),
    ({"max_items": True}, "valid integer"),
    ({"max_items": 2.5}, "valid integer"),
    ({"max_items": 3, "for_each": None}, "max_items caps a for_each"),
]


@pytest.mark.parametrize(("options", "found"), BAD_MAX_ITEMS)
def test_a_bad_max_items_is_refused_in_python_naming_the_workflow_and_step(
    options: dict[str, Any], found: str
) -> None:
    wf = Workflow("each_bad_max").step("list", listing)

    with pytest.raises(ValidationError, match=found) as refused:
        wf.step("p", parse, after="list", **{"for_each": "list", **options})
    assert (refused.value.workflow, refused.value.step) == ("each_bad_max", "p")


@pytest.mark.parametrize(("options", "found"), BAD_MAX_ITEMS)
def test_a_bad_max_items_is_refused_in_yaml_naming_the_workflow_and_step(
    options: dict[str, Any], found: str
) -> None:
    step = {"id": "p", "task": parse.name, "after": ["list"], "for_each": "list", **options}
    data = {"name": "each_bad_yaml", "steps": [{"id": "list", "task": listing.name}, step]}

    with pytest.raises(ValidationError, match=found) as refused:
        parse_spec(data, source="each_bad_yaml.yaml")
    assert (refused.value.workflow, refused.value.step) == ("each_bad_yaml", "p")


@pytest.mark.parametrize(
    ("options", "error", "found"),
    [
        ({"for_each": "nowhere"}, ShapeError, "not a step of this workflow"),
        ({"for_each": "list", "after": "other"}, ShapeError, "not among its dependencies"),
    ],
)
def test_a_for_each_that_names_an_unknown_step_or_not_a_dependency_is_refused(
    options: dict[str, Any], error: type[Exception], found: str
) -> None:
    wf = Workflow("each_refused").step("list", listing).step("other", listing)
    after = options.pop("after", None)
    wf.step("p", parse, after, **options)

    with pytest.raises(error, match=found):
        _ = wf.spec
    assert UnknownDependencyError is not error


def test_a_fan_out_whose_worker_died_is_recovered_and_each_item_runs_once(engine: Engine) -> None:
    from orchestrator.ops.recovery import recover_run

    SEEN.clear()
    run = engine.start(MAP, {"count": 5})
    engine.take()["list"].execute()
    engine.take()["parse"].execute()  # the fan-out: five item messages
    items = engine.worker.take()
    for request in items[:2]:
        request.execute()  # two items ran; the worker holding the other three died
    engine.state_clock.advance(31)

    assert recover_run(engine.rt, run.id, "a step's worker died") == 1
    engine.finish(run)

    assert run.wait() == ["d0", "d1", "d2", "d3", "d4"]
    assert sorted(index for _, index, _ in SEEN) == [0, 1, 2, 3, 4]  # each item once
