"""Workflows by name: defined in Python, or YAML under ``ORCHESTRATOR_WORKFLOWS_PATH``."""

from __future__ import annotations

import threading
from pathlib import Path

import yaml

from orchestrator.errors import ValidationError, WorkflowNotFound
from orchestrator.spec import WorkflowSpec, parse_spec

_lock = threading.Lock()
_workflows: dict[str, WorkflowSpec] = {}
_loaded_paths: set[str] = set()


def register(spec: WorkflowSpec) -> WorkflowSpec:
    """Make ``spec`` findable by name (the newest definition of a name wins)."""
    with _lock:
        _workflows[spec.name] = spec
    return spec


def load_file(path: Path) -> WorkflowSpec:
    """Parse and register one YAML workflow file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValidationError(path.stem, f"{path} is not valid YAML: {exc}") from exc
    return register(parse_spec(data, source=str(path)))


def load_path(path: str | Path) -> list[WorkflowSpec]:
    """Register every ``*.yaml``/``*.yml`` under ``path`` (a directory or a single file)."""
    root = Path(path)
    if root.is_file():
        return [load_file(root)]
    if not root.is_dir():
        return []
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    specs = [load_file(f) for f in files]
    with _lock:
        _loaded_paths.add(str(root.resolve()))
    return specs


def ensure_loaded(path: str | Path) -> None:
    """Load ``path`` once per process."""
    if str(Path(path).resolve()) not in _loaded_paths:
        load_path(path)


def get(name: str) -> WorkflowSpec:
    with _lock:
        spec = _workflows.get(name)
        known = list(_workflows)
    if spec is None:
        raise WorkflowNotFound(name, known)
    return spec


def all_workflows() -> list[WorkflowSpec]:
    with _lock:
        return list(_workflows.values())
