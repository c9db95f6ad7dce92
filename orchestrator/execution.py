"""What a worker does with a step's message: the ``StepTask`` base class of every ``@task``.

Called without the ``orchestrator`` keyword argument, a task is a plain Celery task. Called as a
step it: checks the run's control flag (a cancelled or failed run starts nothing new), builds the
step's arguments (run inputs, the chained result, or its parents' results), records the attempt,
calls the function, then records the result, counts it toward joins (publishing a join's
segment when it completes) and finishes the run when the last sink succeeds. One Redis round
trip before the call and one after; history goes to the batched writer.
"""

from __future__ import annotations

import traceback as tb
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from orchestrator.canvas import CTX_KEY, CanvasBuilder
from orchestrator.context import RunContext, reset_current, set_current
from orchestrator.planner import Plan, StepPlan
from orchestrator.runtime import PlanKey, Runtime, runtime
from orchestrator.spec import WorkflowSpec
from orchestrator.tracking.writer import RunFinal, SkipSteps, StepEvent


def now() -> datetime:
    return datetime.now(UTC)


class StepTask(Task):  # type: ignore[misc]
    """Base class of ``@task`` tasks: a plain task, or a workflow step when given a context."""

    retry_policy: Any = None
    breaker: Any = None
    typing = False  # the step context kwarg is not in the function's signature; specs are checked

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(CTX_KEY, None)
        if ctx is None:
            return self.run(*args, **kwargs)
        return Step(self, ctx).execute(args, kwargs)


class Step:
    """One delivery of one step of one run."""

    def __init__(self, task: StepTask, ctx: dict[str, Any]) -> None:
        self.task = task
        self.rt: Runtime = runtime()
        self.run_id: str = ctx["run_id"]
        self.step_id: str = ctx["step_id"]
        key = PlanKey(ctx["version"], self.run_id if ctx.get("resumed") else None)
        self.spec: WorkflowSpec
        self.plan: Plan
        self.spec, self.plan = self.rt.plan(key)
        self.info: StepPlan = self.plan.steps[self.step_id]
        self.attempt = int(task.request.retries or 0) + 1
        self.resumed = bool(ctx.get("resumed"))

    def execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        parents = list(self.info.parents) if self.info.mode == "fetch" else []
        flag, results = self.rt.state.begin_step(self.run_id, parents)
        if flag in ("cancelled", "failed"):
            self._stand_down(flag)
        if self.info.mode == "fetch":
            first = results[0] if len(results) == 1 else dict(zip(parents, results, strict=True))
            args = (first,)
        self._record("running", starts_run=not self.plan.segments[self.info.segment].trigger)
        token = set_current(RunContext(
            self.run_id, self.step_id, self.attempt, self.spec.name,
            self.task.request.id or "", lambda: self.rt.state.inputs(self.run_id),
        ))
        try:
            result = self.task.run(*args, **kwargs)
        except Exception as exc:
            self._failed(exc)
            raise
        finally:
            reset_current(token)
        self._succeeded(result)
        return result

    def _record(self, status: str, **extra: Any) -> None:
        self.rt.writer.submit(StepEvent(
            self.run_id, self.step_id, self.attempt, status, now(),
            worker=self.task.request.hostname, **extra,
        ))

    def _stand_down(self, flag: str) -> None:
        """The run was cancelled or failed: neither this step nor what follows it will run."""
        status = "cancelled" if flag == "cancelled" else "skipped"
        steps = (self.step_id, *self.plan.descendants(self.step_id))
        self.rt.writer.submit(SkipSteps(self.run_id, steps, status, now(), f"run {flag}"))
        raise Ignore()

    def _failed(self, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self._record("failed", error=error, traceback=tb.format_exc())
        self.rt.state.set_flag(self.run_id, "failed")
        self.rt.writer.submit(RunFinal(
            self.run_id, "failed", now(), error=error, error_step=self.step_id,
            skip=tuple(self.plan.descendants(self.step_id)),
        ))

    def _succeeded(self, result: Any) -> None:
        self._record("succeeded", result=result)
        joins = list(self.info.triggers)
        counts, sinks_done = self.rt.state.finish_step(
            self.run_id, self.step_id, result, joins, self.info.sink
        )
        for index, count in zip(joins, counts, strict=True):
            segment = self.plan.segments[index]
            if count == len(segment.trigger):
                self._builder().publish(segment)
        if sinks_done is not None and sinks_done == len(self.plan.sinks):
            self._finish_run()

    def _builder(self) -> CanvasBuilder:
        return CanvasBuilder(self.rt.app, self.spec, self.plan, self.run_id, {}, self.resumed)

    def _finish_run(self) -> None:
        sinks = self.spec.sinks
        values = self.rt.state.results(self.run_id, sinks)
        output = values[0] if len(sinks) == 1 else dict(zip(sinks, values, strict=True))
        self.rt.writer.submit(RunFinal(self.run_id, "succeeded", now(), output=output))


def shutdown() -> None:
    """Write every queued history event (worker process shutdown)."""
    from orchestrator import runtime as rt_module

    current = rt_module._runtime
    if current is not None and "writer" in current.__dict__:
        current.writer.close()
