"""Plan segments become Celery canvas: chain, group and chord of ordinary task signatures.

Task ids are derived from the run id and step id (uuid5), so they are fixed when the run is
planned, written to ``task_runs`` before publishing, and any worker that publishes a later
segment computes the same ids. Each signature carries the step's context in the keyword argument
``orchestrator`` (visible in Flower), which the step wrapper removes before calling the function.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery, chain, chord, group
from celery.backends.redis import RedisBackend
from celery.canvas import Signature

from orchestrator.core.planner import Plan, Segment
from orchestrator.core.priorities import broker_priority, effective, reversed_by
from orchestrator.core.series_parallel import Expr, Parallel, Series, Task
from orchestrator.core.spec import StepSpec, WorkflowSpec

CTX_KEY = "orchestrator"
QUEUE_TIMEOUT_KEY = "qt"
"""A step context's ``queue_timeout`` (``orchestrator.engine.queue_timeouts``)."""


def task_id(run_id: str, step_id: str) -> str:
    """The Celery task id of a step of a run."""
    return str(uuid.uuid5(uuid.UUID(run_id), step_id))


def item_id(step_id: str, index: int) -> str:
    """The id of one item of a ``for_each`` step (recorded as a step of its own)."""
    return f"{step_id}[{index}]"


def item_input(step_id: str, index: int) -> str:
    """Where the item a ``for_each`` call maps is kept beside the run's results."""
    return f"{item_id(step_id, index)}.in"


def record_id(ctx: dict[str, Any]) -> str:
    """The id a message's step is recorded under: the step, or one item of it."""
    step_id = str(ctx["step_id"])
    return step_id if ctx.get("item") is None else item_id(step_id, int(ctx["item"]))


def step_options(step: StepSpec) -> dict[str, Any]:
    """Celery options of a step: its queue, time limits and any other option it names."""
    options: dict[str, Any] = dict(step.options)
    if step.queue:
        options["queue"] = step.queue
    if step.timeout and not step.waits:  # a wait_for's timeout is how long it waits
        options["time_limit"] = step.timeout
    if step.soft_timeout:
        options["soft_time_limit"] = step.soft_timeout
    return options


class CanvasBuilder:
    """Builds the canvas of one run's segments."""

    def __init__(
        self,
        app: Celery,
        spec: WorkflowSpec,
        plan: Plan,
        run_id: str,
        inputs: dict[str, Any],
        resumed: bool = False,
        epoch: int = 0,
        attempts: dict[str, int] | None = None,
        priority: int | None = None,
    ) -> None:
        self.app = app
        self.spec = spec
        self.plan = plan
        self.run_id = run_id
        self.inputs = inputs
        self.resumed = resumed
        self.epoch = epoch
        self.attempts = attempts or {}
        self._steps = {s.id: s for s in spec.steps}
        self.priority = priority  # the run's; rides in each step's context to later segments
        self._reverse = reversed_by(app.conf.broker_url)
        self._ignore_results = isinstance(app.backend, RedisBackend)

    def context(self, step_id: str) -> dict[str, Any]:
        ctx: dict[str, Any] = {
            "step_id": step_id,
            "run_id": self.run_id,
            "workflow": self.spec.name,
            "version": self.plan.version,
        }
        if self.resumed:
            ctx["resumed"] = True
        if self.epoch:
            ctx["epoch"] = self.epoch
        if self.attempts.get(step_id, 1) > 1:
            ctx["attempt"] = self.attempts[step_id]
        if self.priority is not None:
            ctx["priority"] = self.priority
        queue_timeout = self._steps[step_id].queue_timeout
        if queue_timeout:
            ctx[QUEUE_TIMEOUT_KEY] = queue_timeout
        return ctx

    def options(self, step: StepSpec) -> dict[str, Any]:
        """The step's Celery options with its priority, as its broker reads priorities.

        On a Redis result backend, a step message keeps no Celery result and no ``STARTED``
        state (``ignore_result``): history has the step's ``running`` and ``succeeded``, and the
        run's hash in Redis its result, which is what joins, dependents and recovery read;
        Redis counts a chord's header tasks natively, results or not. Other backends join a
        chord by reading its header's results, so there they are kept."""
        priority = effective(step.priority, self.priority)
        return {
            **step_options(step),
            "priority": broker_priority(priority, self._reverse),
            "ignore_result": self._ignore_results,
        }

    def signature(self, step_id: str) -> Signature:
        step = self._steps[step_id]
        mode = self.plan.steps[step_id].mode
        # the context goes first: Flower keeps only the first 1024 characters of kwargs
        given = {**(self.inputs if mode == "inputs" else {}), **step.kwargs}
        kwargs = {
            CTX_KEY: self.context(step_id),
            **{k: v for k, v in given.items() if k != CTX_KEY},
        }
        return self.app.signature(
            step.task,
            args=(),
            kwargs=kwargs,
            immutable=mode != "chained",
            task_id=task_id(self.run_id, step_id),
            **self.options(step),
        )

    def item(self, step_id: str, index: int, count: int) -> Signature:
        """One call of a ``for_each`` step: it carries its index, never the item."""
        return self._mapped(step_id, item_id(step_id, index), {"item": index, "count": count})

    def more_items(self, step_id: str, start: int, count: int) -> Signature:
        """The message that publishes the next batch of a ``for_each`` step's items."""
        name = f"{step_id}[{start}:]"
        return self._mapped(step_id, name, {"publish_from": start, "count": count})

    def _mapped(self, step_id: str, name: str, extra: dict[str, Any]) -> Signature:
        step = self._steps[step_id]
        ctx = {**self.context(step_id), **extra}
        ctx.pop("attempt", None)
        kwargs = {CTX_KEY: ctx, **{k: v for k, v in step.kwargs.items() if k != CTX_KEY}}
        return self.app.signature(
            step.task,
            args=(),
            kwargs=kwargs,
            immutable=True,
            task_id=task_id(self.run_id, name),
            **self.options(step),
        )

    def build(self, expr: Expr) -> Signature:
        if isinstance(expr, Task):
            return self.signature(expr.step)
        if isinstance(expr, Parallel):
            return group([self.build(i) for i in expr.items])
        return self._series(expr)

    def _series(self, expr: Series) -> Signature:
        # chord(group, body) written out: letting chain() upgrade group+task to a chord
        # re-clones the chain at every stage (field notes: 3 s for 50 stages)
        parts: list[Signature] = []
        items = list(expr.items)
        while items:
            item = items.pop(0)
            if isinstance(item, Parallel) and items:
                header = group([self.build(i) for i in item.items])
                parts.append(chord(header, self.build(items.pop(0))))
            else:
                parts.append(self.build(item))
        return parts[0] if len(parts) == 1 else chain(*parts)

    def segment(self, segment: Segment) -> Signature:
        return self.build(segment.body)

    def publish(self, segment: Segment) -> None:
        self.segment(segment).apply_async()
