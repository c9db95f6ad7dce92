"""Unit tests for the workflow model: spec.py checks, the Python builders and YAML loading."""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from orchestrator.core import registry
from orchestrator.core.spec import WorkflowSpec, parse_spec
from orchestrator.core.task_checks import check_inputs, check_tasks
from orchestrator.errors import (
    CycleError,
    DuplicateStepError,
    EmptyWorkflowError,
    InputError,
    OrchestratorError,
    ScheduleError,
    UnknownDependencyError,
    UnknownTaskError,
    ValidationError,
    WorkflowNotFound,
)
from orchestrator.workflow import Step, Workflow

ETL_YAML = Path(__file__).resolve().parents[2] / "config" / "workflows" / "etl.yaml"


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    # Workflow.spec and YAML loading register globally; keep each test's workflows to itself
    monkeypatch.setattr(registry, "_workflows", {})
    monkeypatch.setattr(registry, "_loaded_paths", set())
    monkeypatch.setattr(registry, "_problems", {})


class FakeCatalog:
    """A TaskCatalog over plain functions, keyed by task name."""

    def __init__(self, **functions: Callable[..., Any]) -> None:
        self.functions = functions

    def signature_of(self, name: str) -> inspect.Signature | None:
        fn = self.functions.get(name)
        return inspect.signature(fn) if fn else None

    def task_names(self) -> list[str]:
        return list(self.functions)


def extract(source: str) -> list[int]:
    return [1]


def clean(rows: list[int]) -> list[int]:
    return rows


def no_args() -> int:
    return 0


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog(**{"t.extract": extract, "t.clean": clean, "t.none": no_args})


def etl_python() -> Workflow:
    return (
        Workflow("etl", description="nightly load", schedule="0 2 * * *")
        .step("extract", "t.extract")
        .step("clean", "t.clean", after="extract", queue="cpu")
    )


# -- structural errors ------------------------------------------------------------------------


def test_a_workflow_without_steps_is_rejected_by_name() -> None:
    # Given a workflow with no steps / When its spec is built / Then EmptyWorkflowError names it
    with pytest.raises(EmptyWorkflowError, match="workflow 'nothing'.*no steps"):
        _ = Workflow("nothing").spec


def test_a_duplicate_step_id_names_workflow_and_step() -> None:
    # Given two steps with one id
    wf = Workflow("dup").step("a", "t.a").step("a", "t.b")
    # When built / Then the error names both the workflow and the repeated step
    with pytest.raises(DuplicateStepError, match=r"workflow 'dup', step 'a': is defined twice"):
        _ = wf.spec


def test_an_unknown_dependency_names_the_step_and_the_missing_id() -> None:
    # Given a step after a step that does not exist
    wf = Workflow("etl", steps=[Step("a", "t.a"), Step("b", "t.b", after=["a", "ghost"])])
    # When built / Then the message points at step b and the missing 'ghost'
    with pytest.raises(UnknownDependencyError) as info:
        _ = wf.spec
    assert "workflow 'etl', step 'b'" in str(info.value)
    assert "'ghost'" in str(info.value) and isinstance(info.value, OrchestratorError)


def test_a_cycle_is_reported_with_its_path() -> None:
    # Given a -> b -> c -> a (b after a, c after b, a after c) plus an unrelated step
    wf = Workflow("loop").step("x", "t.x").step("a", "t.a", after=["x", "c"])
    wf.step("b", "t.b", after="a").step("c", "t.c", after="b")
    # When built / Then the error names the workflow and the whole cycle in dependency order
    with pytest.raises(CycleError) as info:
        _ = wf.spec
    message = str(info.value)
    assert "workflow 'loop'" in message and f"step {info.value.cycle[0]!r}" in message
    assert set(info.value.cycle) == {"a", "b", "c"}
    rotations = ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
    assert any(path in message for path in rotations), message


@pytest.mark.parametrize("seed", range(100))
def test_a_reported_cycle_is_always_a_real_one(seed: int) -> None:
    # Given a random graph that has a cycle (s0 after the last step, which follows s0)
    rng = random.Random(seed)
    n = rng.randint(2, 9)
    after = {f"s{i}": [f"s{j}" for j in range(n) if rng.random() < 0.2] for i in range(n)}
    after["s0"].append(f"s{n - 1}")
    after[f"s{n - 1}"].append("s0")
    # When built / Then each step of the named cycle waits for the one before it
    with pytest.raises(CycleError) as info:
        spec_steps = [{"id": s, "task": "t", "after": ps} for s, ps in after.items()]
        WorkflowSpec(name="g", steps=spec_steps)
    cycle = info.value.cycle
    assert all(cycle[k - 1] in after[step] for k, step in enumerate(cycle))


def test_a_step_after_itself_is_a_cycle() -> None:
    # Given a self-dependency / When built / Then the cycle is the step alone
    with pytest.raises(CycleError, match=r"step 'a'.*a -> a"):
        _ = Workflow("selfish").step("a", "t.a", after="a").spec


@pytest.mark.parametrize(
    ("schedule", "needle"),
    [
        ("0 2 * *", "has 4 fields"),
        ("61 2 * * *", "minute '61'"),
        ("0 24 * * *", "hour '24'"),
        ("0 2 0 * *", "day of month '0'"),
        ("0 2 * 13 *", "month '13'"),
        ("0 2 * * funday", "day of week 'funday'"),
        ("*/0 * * * *", "minute '*/0'"),
        ({"cron": "0 2 * * *", "every": 60}, "exactly one of `cron` and `every`"),
        ({"inputs": {"a": 1}}, "exactly one of `cron` and `every`"),
        ({"every": 0}, "every=0.0 must be > 0"),
        ({"every": -5}, "every=-5.0 must be > 0"),
    ],
)
def test_a_bad_schedule_is_rejected_naming_the_workflow(schedule: Any, needle: str) -> None:
    # Given a workflow whose schedule is malformed / When built / Then ScheduleError explains it
    wf = Workflow("nightly", schedule=schedule).step("a", "t.a")
    with pytest.raises(ScheduleError) as info:
        _ = wf.spec
    assert str(info.value).startswith("workflow 'nightly': ")
    assert needle in str(info.value)


@pytest.mark.parametrize(
    "cron", ["0 2 * * *", "*/15 0-6 1,15 jan-mar mon-fri", "5 4 * dec sun", "0 0 1 1 0"]
)
def test_valid_cron_expressions_are_accepted(cron: str) -> None:
    # Given a well-formed cron / When built / Then the schedule keeps it
    assert Workflow("ok", schedule=cron).step("a", "t.a").spec.schedule.cron == cron


# -- checks against the registered tasks ---------------------------------------------------------


def test_an_unregistered_task_names_the_step_and_the_task(catalog: FakeCatalog) -> None:
    # Given a step naming a task the catalog does not know
    spec = etl_python().step("load", "t.missing", after="clean").spec
    # When its tasks are checked / Then UnknownTaskError names workflow, step and task
    with pytest.raises(UnknownTaskError) as info:
        check_tasks(spec, catalog)
    assert "workflow 'etl', step 'load'" in str(info.value)
    assert "'t.missing' is not registered" in str(info.value)


def test_a_task_typo_gets_the_closest_registered_name(catalog: FakeCatalog) -> None:
    # Given a step whose task is one letter off a registered one
    spec = etl_python().step("load", "t.claen", after="clean").spec
    # When checked / Then the error suggests the registered task
    with pytest.raises(
        UnknownTaskError, match=r"'t.claen' is not registered \(did you mean 't.clean'\?\)"
    ):
        check_tasks(spec, catalog)


@pytest.mark.parametrize(
    "name",
    [
        "celery.chord_unlock",
        "celery.backend_cleanup",
        "orchestrator.run_deadline",
        "orchestrator.fire_schedule",
    ],
)
def test_celery_and_framework_tasks_are_not_steps_even_when_registered(name: str) -> None:
    # Given a step naming one of Celery's or the framework's own (registered) tasks
    catalog = FakeCatalog(**{name: lambda *args, **kwargs: None})
    spec = Workflow("internal").step("x", name).spec
    # When its tasks are checked / Then UnknownTaskError names workflow, step, task and the fix
    with pytest.raises(UnknownTaskError) as info:
        check_tasks(spec, catalog)
    message = str(info.value)
    assert "workflow 'internal', step 'x'" in message and repr(name) in message
    assert "cannot be a workflow step" in message and "@task" in message


def test_a_task_of_a_module_merely_named_like_celery_is_a_step(catalog: FakeCatalog) -> None:
    # Given user tasks whose module names only start with "celery" / "orchestrator"
    catalog.functions.update({"celery_jobs.a": no_args, "orchestrator_etl.b": clean})
    spec = Workflow("mine").step("a", "celery_jobs.a").step("b", "orchestrator_etl.b", after="a")
    # When checked / Then they are accepted
    check_tasks(spec.spec, catalog)


@pytest.mark.parametrize("source", ["python", "yaml"])
def test_a_step_retry_overrides_only_the_fields_it_names(source: str) -> None:
    from orchestrator.core.backoff import RetryPolicy
    from orchestrator.engine.calling import effective_policy

    # Given a task whose @retry retries ConnectionError only, 0.5 s apart, without jitter
    own = RetryPolicy(max_attempts=2, base_delay=0.5, jitter=False, on=(ConnectionError,))
    task: Any = SimpleNamespace(retry_policy=own)
    # And a step that raises only max_attempts, in Python or in YAML
    if source == "python":
        spec = Workflow("r").step("load", "t.load", retry={"max_attempts": 5}).spec
    else:
        doc = "name: r\nsteps: [{id: load, task: t.load, retry: {max_attempts: 5}}]"
        spec = parse_spec(yaml.safe_load(doc))
    # When the spec makes its JSON round trip through PostgreSQL to a worker
    stored = WorkflowSpec.model_validate(json.loads(json.dumps(spec.model_dump(mode="json"))))
    step = stored.step("load")
    # Then the step's policy is the task's with max_attempts replaced, nothing else reset
    assert effective_policy(task, step) == replace(own, max_attempts=5)
    assert step.retry is not None and step.retry.overrides() == {"max_attempts": 5}
    # And without a task policy the unnamed fields are RetryPolicy's defaults
    bare: Any = SimpleNamespace(retry_policy=None)
    assert effective_policy(bare, step) == RetryPolicy(max_attempts=5)


def test_a_child_that_cannot_take_its_parents_result_is_rejected(catalog: FakeCatalog) -> None:
    # Given a non-root step whose function takes no positional argument
    spec = etl_python().step("count", "t.none", after="clean").spec
    # When checked / Then InputError names the step and what it would receive
    with pytest.raises(InputError, match=r"workflow 'etl', step 'count'.*parents' result"):
        check_tasks(spec, catalog)


def test_a_child_that_rejects_its_static_kwargs_is_rejected(catalog: FakeCatalog) -> None:
    # Given a non-root step with a kwarg its function does not have
    spec = etl_python().step("again", "t.clean", after="clean", kwargs={"table": "x"}).spec
    # When checked / Then the error names the offending step and keyword
    with pytest.raises(InputError, match=r"step 'again'.*\(table\)"):
        check_tasks(spec, catalog)


def test_a_well_typed_workflow_passes_both_checks(catalog: FakeCatalog) -> None:
    # Given tasks that fit / When checked with matching inputs / Then nothing is raised
    spec = etl_python().spec
    check_tasks(spec, catalog)
    check_inputs(spec, {"source": "s3://bucket/day"}, catalog)


@pytest.mark.parametrize("inputs", [{"source": {1, 2}}, {"source": object()}, {"x": float("nan")}])
def test_inputs_that_are_not_json_are_rejected(catalog: FakeCatalog, inputs: Any) -> None:
    # Given inputs that cannot travel as JSON / When checked / Then InputError names the workflow
    with pytest.raises(InputError, match=r"workflow 'etl': inputs are not JSON"):
        check_inputs(etl_python().spec, inputs, catalog)


def test_inputs_that_are_not_a_mapping_are_rejected(catalog: FakeCatalog) -> None:
    # Given a list instead of a mapping / When checked / Then InputError says what is expected
    with pytest.raises(InputError, match="must be a mapping"):
        check_inputs(etl_python().spec, ["s3://x"], catalog)  # type: ignore[arg-type]


@pytest.mark.parametrize("inputs", [{}, {"src": "s3://x"}, {"source": "s3://x", "extra": 1}])
def test_inputs_a_root_cannot_accept_name_the_root(catalog: FakeCatalog, inputs: Any) -> None:
    # Given inputs that miss or add a keyword for the root's function
    # When checked / Then InputError names the root step and the keywords it was given
    with pytest.raises(InputError) as info:
        check_inputs(etl_python().spec, inputs, catalog)
    assert "workflow 'etl', step 'extract'" in str(info.value)
    assert "task t.extract(source" in str(info.value) and "run's inputs" in str(info.value)


def test_a_field_error_from_the_python_api_is_an_orchestrator_error() -> None:
    # Given an invalid step option / When the step is added / Then an OrchestratorError is raised
    with pytest.raises(OrchestratorError, match="workflow 'w', step 'a'.*timeout"):
        Workflow("w").step("a", "t.a", timeout=-1)
    with pytest.raises(OrchestratorError, match="workflow 'w'.*overlap"):
        _ = Workflow("w", schedule={"cron": "0 2 * * *", "overlap": "never"}).step("a", "t.a").spec


# -- specs, versions and YAML -----------------------------------------------------------------


def test_python_builders_produce_the_same_spec_and_version() -> None:
    # Given one workflow built with .step() and with steps=[Step(...)]
    chained = etl_python().spec
    listed = Workflow(
        "etl",
        description="nightly load",
        schedule="0 2 * * *",
        steps=[Step("extract", "t.extract"), Step("clean", "t.clean", "extract", queue="cpu")],
    ).spec
    # Then the specs are equal and so are their versions, and the schedule shorthand is a cron
    assert chained == listed and chained.version == listed.version
    assert chained.schedule is not None and chained.schedule.cron == "0 2 * * *"
    assert chained.schedule.overlap == "skip"


def test_version_changes_when_a_step_changes() -> None:
    # Given a workflow and the same workflow with one step's queue changed
    before = etl_python().spec.version
    after = etl_python().step("x", "t.x", after="clean").spec.version
    changed = Workflow("etl", description="nightly load", schedule="0 2 * * *")
    changed.step("extract", "t.extract").step("clean", "t.clean", after="extract", queue="io")
    # Then each change gives a new version, and the version is stable across builds
    assert len({before, after, changed.spec.version}) == 3
    assert etl_python().spec.version == before


def test_the_repository_etl_yaml_loads(tmp_path: Path) -> None:
    # Given the example ETL file / When loaded / Then it is a registered 6-step scheduled spec
    spec = registry.load_file(ETL_YAML)
    assert isinstance(spec, WorkflowSpec) and registry.get("etl") is spec
    assert len(spec.steps) == 6 and spec.roots == ["extract"] and spec.sinks == ["report"]
    assert spec.schedule is not None and spec.schedule.cron == "0 2 * * *"
    assert spec.schedule.inputs == {"source": "s3://bucket/day"}
    load = spec.step("load")
    assert load.after == ("clean", "stats") and load.kwargs == {"table": "facts"}
    assert load.retry is not None and load.retry.max_attempts == 3 and load.timeout == 120


def test_yaml_schedule_shorthand_and_directory_loading(tmp_path: Path) -> None:
    # Given a directory with a .yaml and a .yml workflow, one with a cron string schedule
    (tmp_path / "a.yaml").write_text(
        "name: a\nschedule: '*/5 * * * *'\nsteps: [{id: s, task: t}]\n"
    )
    (tmp_path / "b.yml").write_text("name: b\nsteps:\n  - id: s\n    task: t\n")
    # When the directory is loaded
    specs = registry.load_path(tmp_path)
    # Then both are registered and the shorthand became a cron schedule
    assert [s.name for s in specs] == ["a", "b"]
    assert registry.get("a").schedule.cron == "*/5 * * * *"  # type: ignore[union-attr]
    assert registry.get("b").schedule is None


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    # Given a file that is not YAML / When loaded / Then the ValidationError names the file
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nsteps: [ {id: a, task: t\n")
    with pytest.raises(ValidationError, match=r"broken\.yaml is not valid YAML"):
        registry.load_file(bad)


@pytest.mark.parametrize(
    "text",
    ["- just\n- a list\n", "name: x\nsteps: [{id: a}]\n", "name: x\nsteps: []\nbogus: 1\n"],
)
def test_a_malformed_document_names_the_file(tmp_path: Path, text: str) -> None:
    # Given a YAML document that is not a workflow / When loaded
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    # Then a framework ValidationError names the file and nothing is registered
    with pytest.raises(ValidationError, match=r"odd\.yaml"):
        registry.load_file(path)
    assert registry.all_workflows() == []


@pytest.mark.parametrize(
    ("step", "hint"),
    [
        ("{id: b, task: t, depends_on: [a]}", "unknown key 'depends_on' (did you mean 'after'?)"),
        ("{id: b, task: t, after: [a], queeu: io}", "unknown key 'queeu' (did you mean 'queue'?)"),
        ("{id: b, task: t, retry: {max_attempt: 2}}", "unknown retry key 'max_attempt' (did you"),
        ("{id: b}", "key 'task' is missing"),
        ("{id: b, task: t, timeout: -1}", "timeout: Input should be greater than 0 (got -1)"),
    ],
)
def test_a_yaml_mistake_names_the_step_and_suggests_a_key(step: str, hint: str) -> None:
    # Given a workflow document with a mistake in its second step
    data = yaml.safe_load(f"name: y\nsteps:\n  - {{id: a, task: t}}\n  - {step}\n")
    # When parsed / Then one line names the workflow, the step, the mistake and the file
    with pytest.raises(ValidationError) as info:
        parse_spec(data, source="y.yaml")
    message = str(info.value)
    assert message.startswith("workflow 'y', step 'b': ") and hint in message, message
    assert "y.yaml" in message and "pydantic" not in message and "\n" not in message


def test_an_unknown_workflow_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        parse_spec({"name": "y", "step": [], "steps": [{"id": "a", "task": "t"}]}, "y.yaml")
    assert "workflow 'y': unknown key 'step' (did you mean 'steps'?)" in str(info.value)


def test_a_directory_with_one_bad_file_loads_the_others(tmp_path: Path) -> None:
    # Given a valid workflow next to a file with a cycle and a file that is not YAML
    (tmp_path / "good.yaml").write_text("name: good\nsteps: [{id: a, task: t}]\n")
    (tmp_path / "cycle.yaml").write_text(
        "name: loop\nsteps: [{id: a, task: t, after: [b]}, {id: b, task: t, after: [a]}]\n"
    )
    (tmp_path / "broken.yml").write_text("name: x\nsteps: [ {id: a\n")
    # When the directory is loaded
    specs = registry.load_path(tmp_path)
    # Then the valid one is registered and each bad file is kept with its workflow and step
    assert [s.name for s in specs] == ["good"] and registry.get("good").name == "good"
    found = {Path(p.file).name: p for p in registry.problems()}
    assert set(found) == {"cycle.yaml", "broken.yml"}
    assert (found["cycle.yaml"].workflow, found["cycle.yaml"].step) == ("loop", "a")
    assert "dependency cycle a -> b -> a" in found["cycle.yaml"].error
    assert "is not valid YAML" in found["broken.yml"].error
    # And once a file is fixed, loading it again forgets its problem
    (tmp_path / "cycle.yaml").write_text("name: loop\nsteps: [{id: a, task: t}]\n")
    registry.load_path(tmp_path)
    assert [Path(p.file).name for p in registry.problems()] == ["broken.yml"]


def test_structural_errors_from_yaml_name_workflow_and_step() -> None:
    # Given a YAML document with a duplicate id / When parsed / Then the same error type results
    data = {"name": "y", "steps": [{"id": "a", "task": "t"}, {"id": "a", "task": "t"}]}
    with pytest.raises(DuplicateStepError, match="workflow 'y', step 'a'"):
        parse_spec(data, source="y.yaml")


def test_an_unknown_workflow_lists_the_known_ones() -> None:
    # Given one registered workflow / When another name is looked up / Then the error lists it
    _ = etl_python().spec
    with pytest.raises(WorkflowNotFound, match=r"'nope' is not registered \(known: etl\)"):
        registry.get("nope")
