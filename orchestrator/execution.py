"""What a worker does with a step's message: the ``StepTask`` base class of every ``@task``.

Called without the ``orchestrator`` keyword argument, a task is a plain Celery task (still
guarded by its circuit breaker). Called as a step it: checks the run's control flag (a cancelled
or failed run starts nothing new), builds the step's arguments (run inputs, the chained result,
or its parents' results), asks the breaker, records the attempt, calls the function, then
records the result, counts it toward joins (publishing a join's segment when it completes) and
finishes the run when the last sink succeeds. A failure is retried per the step's policy, the
wait held by the broker or, past the visibility timeout, durably in Redis; a step that fails for
good fails its run and gets a dead letter. One Redis round trip before the call and one after;
history goes to the batched writer.
"""

from __future__ import annotations

import inspect
import time
import traceback as tb
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry
from celery.worker.request import Request

from orchestrator.backoff import RetryPolicy
from orchestrator.breaker import BreakerConfig
from orchestrator.canvas import CTX_KEY, CanvasBuilder
from orchestrator.context import RunContext, reset_current, set_current
from orchestrator.errors import CircuitOpenError
from orchestrator.planner import Plan, StepPlan
from orchestrator.runtime import PlanKey, Runtime, runtime
from orchestrator.spec import StepSpec, WorkflowSpec
from orchestrator.tracking.writer import DeadLetterEvent, RunFinal, SkipSteps, StepEvent


def now() -> datetime:
    return datetime.now(UTC)


class BadArguments(TypeError):
    """The message's arguments do not fit the task's function."""


class StepTask(Task):  # type: ignore[misc]
    """Base class of ``@task`` tasks: a plain task, or a workflow step when given a context."""

    retry_policy: RetryPolicy | None = None
    breaker: BreakerConfig | None = None
    typing = False  # the step context kwarg is not in the function's signature; specs are checked
    Request = "orchestrator.execution:StepRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(CTX_KEY, None)
        if ctx is None:
            return self._plain(args, kwargs)
        return Step(self, ctx).execute(args, kwargs)

    def _plain(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.breaker is None:
            return self.run(*args, **kwargs)
        store = runtime().breakers
        decision, wait = store.acquire(self.breaker)
        if decision == "defer":
            raise CircuitOpenError(self.breaker.name, wait)
        return guarded(self.breaker, decision == "trial", lambda: self.run(*args, **kwargs))


def guarded(cfg: BreakerConfig, trial: bool, call: Any) -> Any:
    """Call ``call`` and report its outcome to the breaker ``cfg``."""
    store = runtime().breakers
    try:
        result = call()
    except Exception as exc:
        store.report(cfg, ok=not cfg.counts(exc), trial=trial)
        raise
    store.report(cfg, ok=True, trial=trial)
    return result


def effective_policy(task: StepTask, step: StepSpec) -> RetryPolicy | None:
    """The task's ``@retry`` policy with the step's ``retry`` overrides."""
    if step.retry is None:
        return task.retry_policy
    base = task.retry_policy or RetryPolicy()
    return base.merged(**step.retry.model_dump())


class Step:
    """One delivery of one step of one run."""

    def __init__(self, task: StepTask, ctx: dict[str, Any]) -> None:
        self.task = task
        self.ctx = ctx
        self.rt: Runtime = runtime()
        self.run_id: str = ctx["run_id"]
        self.step_id: str = ctx["step_id"]
        self.resumed = bool(ctx.get("resumed"))
        key = PlanKey(ctx["version"], self.run_id if self.resumed else None)
        self.spec: WorkflowSpec
        self.plan: Plan
        self.spec, self.plan = self.rt.plan(key)
        self.info: StepPlan = self.plan.steps[self.step_id]
        self.attempt = int(ctx.get("attempt", 1))
        self.policy = effective_policy(task, self.spec.step(self.step_id))

    def execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        parents = list(self.info.parents) if self.info.mode == "fetch" else []
        flag, results = self.rt.state.begin_step(self.run_id, parents)
        if flag in ("cancelled", "failed"):
            self._stand_down(flag)
        if self.info.mode == "fetch":
            first = results[0] if len(results) == 1 else dict(zip(parents, results, strict=True))
            args = (first,)
        trial = self._ask_breaker()
        self._record("running", starts_run=not self.plan.segments[self.info.segment].trigger)
        token = set_current(RunContext(
            self.run_id, self.step_id, self.attempt, self.spec.name,
            self.task.request.id or "", lambda: self.rt.state.inputs(self.run_id),
        ))
        try:
            result = self._call(args, kwargs, trial)
        except Exception as exc:
            self.on_error(exc, args, kwargs)
            raise
        finally:
            reset_current(token)
        self._succeeded(result)
        return result

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], trial: bool | None) -> Any:
        try:
            inspect.signature(self.task.run).bind(*args, **kwargs)
        except TypeError as exc:
            raise BadArguments(f"{self.task.name} cannot take these arguments: {exc}") from exc
        if trial is None or self.task.breaker is None:
            return self.task.run(*args, **kwargs)
        return guarded(self.task.breaker, trial, lambda: self.task.run(*args, **kwargs))

    def _ask_breaker(self) -> bool | None:
        """None without a breaker; whether this call is the half-open trial; or defer the step."""
        cfg = self.task.breaker
        if cfg is None:
            return None
        decision, wait = self.rt.breakers.acquire(cfg)
        if decision == "defer":
            # not an attempt: the same attempt number is delivered again once the breaker allows
            raise self.task.retry(countdown=wait, max_retries=None)
        return decision == "trial"

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

    def on_error(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Retry per the policy (raises ``Retry``), or fail the step and its run for good."""
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(tb.format_exception(exc))
        retryable = not isinstance(exc, BadArguments)
        if retryable and self.policy and self.policy.should_retry(exc, self.attempt):
            self._record("retrying", error=error, traceback=trace)
            schedule_retry(self.task, self.task.request, self.ctx, self.policy.delay(self.attempt),
                           exc)
        self._record("failed", error=error, traceback=trace)
        self.rt.writer.submit(DeadLetterEvent(
            task=self.task.name, reason="bad_arguments" if not retryable else "exhausted",
            at=now(), run_id=self.run_id, step_id=self.step_id,
            celery_task_id=self.task.request.id, args=list(args), kwargs=kwargs,
            error=error, traceback=trace,
        ))
        fail_run(self.rt, self.run_id, self.plan, self.step_id, error)

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


def fail_run(rt: Runtime, run_id: str, plan: Plan, step_id: str, error: str) -> None:
    """Fail the run at ``step_id``: nothing new starts, its dependents are skipped."""
    rt.state.set_flag(run_id, "failed")
    rt.writer.submit(RunFinal(
        run_id, "failed", now(), error=error, error_step=step_id,
        skip=tuple(plan.descendants(step_id)),
    ))


def schedule_retry(
    task: StepTask, request: Any, ctx: dict[str, Any], delay: float, exc: BaseException
) -> None:
    """Deliver the next attempt after ``delay`` seconds; raises Celery's ``Retry``."""
    rt = runtime()
    kwargs = {**(request.kwargs or {}), CTX_KEY: {**ctx, "attempt": int(ctx.get("attempt", 1)) + 1}}
    if delay < rt.longest_broker_delay:
        raise task.retry(countdown=delay, exc=exc, max_retries=None, kwargs=kwargs)
    sig = task.signature_from_request(request, request.args, kwargs, retries=request.retries + 1)
    due = time.time() + delay
    rt.delays.add(dict(sig), due)
    raise Retry(exc=exc, when=datetime.fromtimestamp(due, UTC))


class StepRequest(Request):  # type: ignore[misc]
    """A step's request in the worker's main process: records hard time-limit kills."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        ctx = (self.kwargs or {}).get(CTX_KEY) if not soft else None
        if ctx:
            hard_timeout(self.task, ctx, self, timeout)


def hard_timeout(task: StepTask, ctx: dict[str, Any], request: Request, timeout: float) -> None:
    """The pool child was killed at the hard time limit: record the attempt, retry or fail."""
    from celery.exceptions import TimeLimitExceeded

    exc = TimeLimitExceeded(f"hard time limit ({timeout}s) exceeded")
    task.push_request({**request.request_dict, "args": list(request.args or ()),
                       "kwargs": dict(request.kwargs or {}), "hostname": request.hostname})
    try:
        Step(task, ctx).on_error(exc, tuple(request.args or ()), dict(request.kwargs or {}))
    except Retry:
        pass
    finally:
        task.pop_request()


def shutdown() -> None:
    """Write every queued history event (worker process shutdown)."""
    from orchestrator import runtime as rt_module

    current = rt_module._runtime
    if current is not None and "writer" in current.__dict__:
        current.writer.close()
