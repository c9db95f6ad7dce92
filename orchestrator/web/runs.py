"""Runs as the console reads them: a page of a listing, one run, and its DAG.

Every read goes through the app's ``RunHistory`` port; a run's steps are put in the order and
shape of its workflow's spec as the engine plans it (``Services.plan``), and the DAG is drawn
from that spec by ``core.graph_drawing``, coloured by the steps' statuses.
"""

from __future__ import annotations

from orchestrator.core.graph_drawing import to_svg
from orchestrator.core.graph_layout import GraphNode
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.run_context import run_context
from orchestrator.engine.services import PlanKey, Services
from orchestrator.engine.waiting import with_waits
from orchestrator.errors import RunNotFound
from orchestrator.records import RunQuery, RunRecord
from orchestrator.web import model
from orchestrator.web.filters import encode_cursor


class RunReader:
    """The runs of one app's history, as the console's one run model."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def page(self, query: RunQuery, limit: int) -> model.RunPage:
        """A page of runs, newest first, and the cursor of the next page if there is one."""
        found = self.services.history.find_runs(query, limit + 1)
        shown = found[:limit]
        more = len(found) > limit and shown
        return model.RunPage(
            runs=[model.summary(r) for r in shown],
            next=encode_cursor(shown[-1].created_at, shown[-1].id) if more else None,
        )

    def record(self, run_id: str) -> RunRecord:
        found = self.services.history.get_run(run_id)
        if found is None:
            raise RunNotFound(run_id)
        return found

    def run(self, run_id: str) -> model.Run:
        """The run with its steps (in the spec's order), attempts, events and child runs."""
        record = self.record(run_id)
        spec = self.spec(record)
        flower = self.services.settings.flower_url
        after = {s.id: list(s.after) for s in spec.steps} if spec else {}
        place = {step_id: i for i, step_id in enumerate(after)}
        stored = with_waits(self.services, record, self.services.history.get_steps(record.id))
        steps = [
            model.step(s, after.get(s.step_id, []), item_of(s.step_id, after), flower)
            for s in stored
        ]
        steps.sort(key=lambda s: (place.get(s.item_of or s.step_id, len(place)), bool(s.item_of)))
        history = self.services.history
        return model.run(
            record,
            steps,
            history.events(record.id),
            history.children(record.id),
            run_context(self.services, record.id),
        )

    def spec(self, record: RunRecord) -> WorkflowSpec | None:
        """The spec the run was planned from (None if history no longer has it, or it no
        longer validates: the run is still shown, its steps without their DAG edges)."""
        try:
            return self.services.plan(PlanKey(record.workflow_version))[0]
        except (LookupError, ValueError):  # pydantic's ValidationError is a ValueError
            return None


def item_of(step_id: str, spec_steps: dict[str, list[str]]) -> str | None:
    """The ``for_each`` step whose item ``step_id`` is (``per_doc[3]``: ``per_doc``)."""
    if step_id in spec_steps or not spec_steps:
        return None
    base = step_id.partition("[")[0]
    return base if base in spec_steps else None


def dag_svg(steps: list[model.Step], title: str = "") -> str:
    """The steps' DAG as an SVG element to put in a page, each step coloured by its status
    (a ``for_each`` step's items are rows of the steps table, not nodes)."""
    nodes = [GraphNode(s.step_id, s.task, tuple(s.after), s.status) for s in steps if not s.item_of]
    return inline_svg(to_svg(nodes, title=title)) if nodes else ""


def inline_svg(document: str) -> str:
    """An SVG document without its XML declaration, to be part of an HTML page."""
    return document.split("?>", 1)[1].lstrip() if document.startswith("<?xml") else document
