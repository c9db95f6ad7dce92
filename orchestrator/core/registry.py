"""Workflows by name: defined in Python, or YAML under ``ORCHESTRATOR_WORKFLOWS_PATH``.

A directory of YAML files is loaded one file at a time: a file that is not a valid workflow is
logged and skipped, and kept as a :class:`LoadProblem` (file, workflow, step, reason) for
``orchestrator validate`` and the CLI; every other workflow is registered as usual, so one bad
file never stops a worker, beat or the CLI.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.core.spec import WorkflowSpec, parse_spec
from orchestrator.errors import ValidationError, WorkflowNotFound

log = logging.getLogger("orchestrator")
_lock = threading.Lock()
_workflows: dict[str, WorkflowSpec] = {}
_builders: dict[str, Any] = {}  # Python ``Workflow`` objects, validated when first looked up
_loaded_paths: set[str] = set()
_problems: dict[str, LoadProblem] = {}  # file -> why it was skipped


@dataclass(frozen=True)
class LoadProblem:
    """A workflow file that was skipped, and why (``error`` names the workflow and step)."""

    file: str
    workflow: str | None
    step: str | None
    error: str

    def __str__(self) -> str:
        return f"workflow file {self.file} skipped: {self.error}"


def register(spec: WorkflowSpec) -> WorkflowSpec:
    """Make ``spec`` findable by name (the newest definition of a name wins)."""
    with _lock:
        _workflows[spec.name] = spec
        _builders.pop(spec.name, None)
    return spec


def add_builder(name: str, builder: Any) -> None:
    """Register a Python ``Workflow`` by name; its spec is built when it is looked up."""
    with _lock:
        _builders[name] = builder


def _materialize(name: str | None = None) -> None:
    """Build the specs of registered Python workflows (of ``name`` only, when given).

    Looking one up by name raises its validation error; listing all skips the invalid ones.
    """
    with _lock:
        names = [name] if name is not None else list(_builders)
        builders = [(n, _builders.pop(n)) for n in names if n in _builders]
    for found, builder in builders:
        try:
            register(builder.spec)
        except ValidationError as exc:
            if name is not None:
                raise
            log.warning("workflow %r is not valid; skipped: %s", found, exc)


def load_file(path: Path) -> WorkflowSpec:
    """Parse and register one YAML workflow file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(path.stem, f"{path} is not valid YAML: {exc}") from exc
    return register(parse_spec(data, source=str(path)))


def workflow_files(path: str | Path) -> list[Path]:
    """The YAML files ``path`` names: itself, or the ``*.yaml``/``*.yml`` in it."""
    root = Path(path)
    if root.is_dir():
        return sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    return [root] if root.is_file() else []


def load_path(path: str | Path) -> list[WorkflowSpec]:
    """Register every workflow file under ``path`` (a directory or a single file); a file that
    is not valid is logged, kept in :func:`problems` and skipped."""
    specs = []
    for file in workflow_files(path):
        try:
            specs.append(load_file(file))
        except ValidationError as exc:
            problem = LoadProblem(str(file), exc.workflow, exc.step, str(exc))
            log.warning("%s", problem)
            with _lock:
                _problems[problem.file] = problem
        else:
            with _lock:
                _problems.pop(str(file), None)
    with _lock:
        _loaded_paths.add(str(Path(path).resolve()))
    return specs


def problems() -> list[LoadProblem]:
    """The workflow files this process skipped, and why."""
    with _lock:
        return list(_problems.values())


def ensure_loaded(path: str | Path) -> None:
    """Load ``path`` once per process."""
    if str(Path(path).resolve()) not in _loaded_paths:
        load_path(path)


def get(name: str) -> WorkflowSpec:
    _materialize(name)
    with _lock:
        spec = _workflows.get(name)
        known = list(_workflows)
    if spec is None:
        raise WorkflowNotFound(name, known)
    return spec


def all_workflows() -> list[WorkflowSpec]:
    _materialize()
    with _lock:
        return list(_workflows.values())
