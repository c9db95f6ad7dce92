"""The workflows the console knows (Python and YAML, as ``run_workflow`` finds them): their
steps, DAG, schedule, and the inputs their first steps take."""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from orchestrator.core import registry
from orchestrator.core.graph_drawing import to_svg
from orchestrator.core.graph_layout import GraphNode
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.services import Services
from orchestrator.engine.submit import resolve
from orchestrator.ops import schedule_control
from orchestrator.ops.schedule import describe
from orchestrator.records import ScheduleState
from orchestrator.web.runs import inline_svg

NO_DEFAULT = inspect.Parameter.empty
SPREAD = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class Schedule(BaseModel):
    """A scheduled workflow as :func:`orchestrator.ops.schedule.describe` tells it."""

    workflow: str
    schedule: str
    cron: str | None
    every: float | None
    inputs: dict[str, Any]
    overlap: str
    catchup: str
    paused: bool | None  # None: not known (PostgreSQL away)
    last_fire_time: datetime | None
    next_fire_time: datetime | None


class Input(BaseModel):
    """An input a first step's function takes (``required`` when it has no default)."""

    name: str
    step: str
    required: bool
    default: Any


class StepInfo(BaseModel):
    id: str
    task: str
    after: list[str]
    queue: str | None
    timeout: float | None


class Workflow(BaseModel):
    name: str
    description: str
    version: str
    steps: list[StepInfo]
    schedule: Schedule | None
    deadline: float | None
    inputs: list[Input]


class Catalog:
    """The registered workflows of one app."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def specs(self) -> list[WorkflowSpec]:
        self.services.load_modules()
        return sorted(registry.all_workflows(), key=lambda s: s.name)

    def spec(self, name: str) -> WorkflowSpec:
        """The workflow registered as ``name`` (``WorkflowNotFound`` otherwise)."""
        return resolve(self.services, name)

    def workflows(self) -> list[Workflow]:
        return [self.describe(spec) for spec in self.specs()]

    def schedules(self) -> list[Schedule]:
        """Every schedule, with its paused state and last fire time (PostgreSQL)."""
        return [Schedule(**row) for row in schedule_control.schedules(self.services)]

    def describe(self, spec: WorkflowSpec) -> Workflow:
        return Workflow(
            name=spec.name,
            description=spec.description,
            version=spec.version,
            steps=[
                StepInfo(
                    id=s.id, task=s.task, after=list(s.after), queue=s.queue, timeout=s.timeout
                )
                for s in spec.steps
            ],
            schedule=schedule_of(spec),  # its paused state: the schedules page
            deadline=spec.deadline,
            inputs=self.inputs(spec),
        )

    def inputs(self, spec: WorkflowSpec) -> list[Input]:
        """The named parameters of the first steps' functions that their kwargs leave open."""
        found: dict[str, Input] = {}
        for step in spec.steps:
            sig = self.services.catalog.signature_of(step.task)
            if step.after or sig is None:
                continue
            for p in sig.parameters.values():
                if p.kind in SPREAD or p.name in step.kwargs or p.name in found:
                    continue
                required = p.default is NO_DEFAULT
                default = None if required else p.default
                found[p.name] = Input(name=p.name, step=step.id, required=required, default=default)
        return list(found.values())


def schedule_of(
    spec: WorkflowSpec, state: ScheduleState | None = None, now: datetime | None = None
) -> Schedule | None:
    """The workflow's schedule and when beat fires it next (None: it has none)."""
    return None if spec.schedule is None else Schedule(**describe(spec, state, now))


def workflow_svg(spec: WorkflowSpec) -> str:
    nodes = [GraphNode(s.id, s.task, s.after) for s in spec.steps]
    return inline_svg(to_svg(nodes))
