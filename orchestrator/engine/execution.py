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

Attempts are the framework's own: Celery's ``max_retries`` never caps them (it is ``None`` on
every step task), and the next attempt is published by this module, never by ``Task.retry``
(which re-raises instead of publishing where Celery handles a hard time limit, in the worker's
main process). Until a delivery of the next attempt is claimed, its message is also noted in
Redis, so the reconciler can publish it again if it was lost on the way.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import signal
import threading
import time
import traceback as tb
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Retry, TimeLimitExceeded
from celery.worker.request import Request
from celery.worker.state import task_ready
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.codec import Encoded, UnencodableValue, encode
from orchestrator.context import RunContext, reset_current, set_current
from orchestrator.core.backoff import RetryPolicy
from orchestrator.core.breaker import BreakerConfig
from orchestrator.core.planner import Plan, StepPlan
from orchestrator.core.spec import StepSpec, WorkflowSpec
from orchestrator.engine.canvas import CTX_KEY, CanvasBuilder
from orchestrator.engine.runtime import PlanKey, Runtime, runtime
from orchestrator.errors import CircuitOpenError, ServiceUnavailable
from orchestrator.records import Claim, DeadLetterEvent, RunFinal, SkipSteps, StepEvent
from orchestrator.stores.redis.runs import key as run_key

log = logging.getLogger("orchestrator.step")


def now() -> datetime:
    return datetime.now(UTC)


class NotRetryable(TypeError):
    """A failure that another attempt cannot mend: it fails the step at once."""


class BadArguments(NotRetryable):
    """The message's arguments do not fit the task's function."""


class UnencodableResult(NotRetryable):
    """The step returned a value Celery's JSON cannot encode."""


class MissingResult(NotRetryable):
    """A parent's result is neither in Redis nor in history."""


class StepTask(Task):  # type: ignore[misc]
    """Base class of ``@task`` tasks: a plain task, or a workflow step when given a context."""

    retry_policy: RetryPolicy | None = None
    breaker: BreakerConfig | None = None
    max_retries = None  # attempts are counted by the framework (field notes: the 4th retry)
    typing = False  # the step context kwarg is not in the function's signature; specs are checked
    Request = "orchestrator.engine.execution:StepRequest"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(CTX_KEY, None)
        if ctx is None:
            return self._plain(args, kwargs)
        try:
            step = Step(self, ctx)
        except (SQLAlchemyError, ServiceUnavailable) as exc:
            # PostgreSQL is away and this process has not seen the run's plan yet: try again
            # soon; this is not an attempt of the step
            raise self.retry(countdown=2.0, max_retries=None, exc=exc) from exc
        except Exception as exc:
            unplannable(ctx, exc)
            raise
        return step.execute(args, kwargs)

    def _plain(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.breaker is None:
            return self.run(*args, **kwargs)
        store = runtime().breakers
        decision, wait = store.acquire(self.breaker)
        if decision == "defer":
            raise CircuitOpenError(self.breaker.name, wait)
        return guarded(self.breaker, decision == "trial", lambda: self.run(*args, **kwargs))


def signature_of(task: StepTask) -> inspect.Signature:
    """The task function's signature, computed once per task."""
    found: inspect.Signature | None = task.__dict__.get("_orchestrator_signature")
    if found is None:
        found = inspect.signature(task.run)
        task.__dict__["_orchestrator_signature"] = found
    return found


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
        self.epoch = int(ctx.get("epoch", 0))
        key = PlanKey(
            ctx["version"], self.run_id if self.resumed or self.epoch else None, self.epoch
        )
        self.spec: WorkflowSpec
        self.plan: Plan
        self.spec, self.plan = self.rt.plan(key)
        self.info: StepPlan = self.plan.steps[self.step_id]
        self.attempt = int(ctx.get("attempt", 1))
        self.policy = effective_policy(task, self.spec.step(self.step_id))
        self.owner = f"{task.request.hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        parents = list(self.info.parents) if self.info.mode == "fetch" else []
        claim = self._claim(parents)
        if claim.outcome == "done":
            return self._already_done(claim.result)
        if claim.outcome == "missing":
            self._fail_unstarted(MissingResult(self._missing(claim.flag)), args, kwargs)
        if claim.outcome != "go":
            raise Ignore()  # another live delivery is executing this step
        if claim.deliveries > self.rt.settings.max_deliveries:
            self._undeliverable(claim.deliveries, args, kwargs)
        if self.info.mode == "fetch":
            values = claim.parents
            args = (values[0] if len(values) == 1 else dict(zip(parents, values, strict=True)),)
        trial = self._ask_breaker()
        self._record("running", starts_run=not self.plan.segments[self.info.segment].trigger)
        token = set_current(
            RunContext(
                self.run_id,
                self.step_id,
                self.attempt,
                self.spec.name,
                self.task.request.id or "",
                lambda: self.rt.state.inputs(self.run_id),
            )
        )
        try:
            result = self._call(args, kwargs, trial)
            encoded = self._encode(result)
        except Exception as exc:
            self.on_error(exc, args, kwargs)
            raise
        finally:
            reset_current(token)
            LEASES.drop(self.lease_key)
        self._succeeded(result, encoded)
        return result

    @property
    def lease_key(self) -> str:
        return run_key(self.run_id, f"lease:{self.step_id}:{self.attempt}")

    def _claim(self, parents: list[str]) -> Claim:
        """Claim the step; a paused run parks it, a cancelled or failed run stands it down."""
        lease_ms = int(self.rt.settings.lease_seconds * 1000)
        steal, restored = "", False
        while True:
            claim = self.rt.state.claim(
                self.run_id, self.step_id, self.attempt, self.owner, lease_ms, parents, steal
            )
            if claim.outcome == "go":
                LEASES.keep(self.lease_key, self.owner)
                return claim
            if claim.outcome == "busy" and not steal and holder_is_dead(claim.flag, self.host):
                steal = claim.flag or ""  # its pool process was killed: take the step over
                continue
            if claim.outcome == "missing" and not restored:
                self._restore_results()
                restored = True
                continue
            if claim.outcome != "flag" or claim.flag != "paused":
                if claim.outcome == "flag":
                    self._stand_down(claim.flag or "cancelled")
                return claim
            request = self.task.request
            sig = self.task.signature_from_request(request, request.args, request.kwargs)
            if self.rt.state.park(self.run_id, dict(sig)):
                raise Ignore()  # published again by resume()

    @property
    def host(self) -> str:
        return str(self.task.request.hostname or "")

    def _restore_results(self) -> None:
        """Put the results history has back into Redis (lost with Redis's data)."""
        steps = self.rt.store.get_steps(self.run_id)
        done = {s.step_id: s.result for s in steps if s.status == "succeeded"}
        if done:
            self.rt.state.restore_results(self.run_id, done)

    def _missing(self, parent: str | None) -> str:
        return (
            f"workflow {self.spec.name!r}, run {self.run_id}: step {self.step_id!r} cannot start: "
            f"the result of its parent step {parent!r} is neither in Redis nor in history (Redis "
            "lost or evicted it; set maxmemory-policy noeviction and keep Redis's AOF)"
        )

    def _encode(self, result: Any) -> str:
        try:
            return encode(result)
        except UnencodableValue as exc:
            raise UnencodableResult(
                f"workflow {self.spec.name!r}, step {self.step_id!r} returned a value of type "
                f"{type(result).__name__} that Celery's JSON cannot encode ({exc}); return JSON "
                "data (dict, list, str, numbers, bool, None, datetime, Decimal, UUID)"
            ) from exc

    def _fail_unstarted(
        self, exc: NotRetryable, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.on_error(exc, args, kwargs)
        raise exc

    def _already_done(self, result: Any) -> Any:
        """A redelivered step that had succeeded: finish what its first delivery may not have.

        Its process may have died after the result reached Redis but before its history was
        written, or (when Celery has no result for it) before the canvas moved on.
        """
        self._record("succeeded", result=result)
        if self.task.AsyncResult(self.task.request.id).state != "SUCCESS":
            self._succeeded(result, encode(result), recheck=True)
            return result
        if self.info.sink:
            _, sinks = self.rt.state.finish_step(
                self.run_id, self.step_id, encode(result), [], True, self.attempt, self.owner
            )
            if sinks is not None and sinks[1] == len(self.spec.sinks):
                self._finish_run()
        raise Ignore()

    def _undeliverable(
        self, deliveries: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """The attempt was delivered again and again (its process keeps dying): give up on it."""
        error = (
            f"attempt {self.attempt} was delivered {deliveries} times without finishing "
            f"(its worker process died each time; limit ORCHESTRATOR_MAX_DELIVERIES="
            f"{self.rt.settings.max_deliveries})"
        )
        self.rt.state.release(self.run_id, self.step_id, self.attempt, self.owner)
        self._record("failed", error=error)
        self._dead_letter("too_many_deliveries", args, kwargs, error, None)
        fail_run(self.rt, self.run_id, self.step_id, error)
        raise Ignore()

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], trial: bool | None) -> Any:
        try:
            signature_of(self.task).bind(*args, **kwargs)
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
            LEASES.drop(self.lease_key)
            self.rt.state.release(self.run_id, self.step_id, self.attempt, self.owner)
            self.rt.state.undo_delivery(self.run_id, self.step_id, self.attempt)
            raise self.task.retry(countdown=wait, max_retries=None)
        return decision == "trial"

    def _record(self, status: str, **extra: Any) -> None:
        self.rt.writer.submit(
            StepEvent(
                self.run_id,
                self.step_id,
                self.attempt,
                status,
                now(),
                worker=self.task.request.hostname,
                **extra,
            )
        )

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
        retryable = not isinstance(exc, NotRetryable)
        self.rt.state.release(self.run_id, self.step_id, self.attempt, self.owner)
        if self.rt.state.failure(self.run_id) is not None:
            # the run was cancelled or failed meanwhile: no next attempt, no second failure
            self._record("failed", error=error, traceback=trace)
            return
        if retryable and self.policy and self.policy.should_retry(exc, self.attempt):
            delay = self.policy.delay(self.attempt)
            log.warning("attempt %d failed (%s); retrying in %.2fs", self.attempt, error, delay)
            self._record("retrying", error=error, traceback=trace)
            schedule_retry(self.task, self.task.request, self.ctx, delay, exc)
        log.error("attempt %d failed for good: %s", self.attempt, error)
        self._record("failed", error=error, traceback=trace)
        reason = "exhausted" if retryable else _REASONS.get(type(exc), "not_retryable")
        self._dead_letter(reason, args, kwargs, error, trace)
        fail_run(self.rt, self.run_id, self.step_id, error)

    def _dead_letter(
        self,
        reason: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        error: str,
        trace: str | None,
    ) -> None:
        self.rt.writer.submit(
            DeadLetterEvent(
                task=self.task.name,
                reason=reason,
                at=now(),
                run_id=self.run_id,
                step_id=self.step_id,
                celery_task_id=self.task.request.id,
                args=list(args),
                kwargs=kwargs,
                error=error,
                traceback=trace,
            )
        )

    def _succeeded(self, result: Any, encoded: str, recheck: bool = False) -> None:
        if not recheck:
            self._record("succeeded", result=Encoded(encoded))
        joins = [f"{self.epoch}:{index}" for index in self.info.triggers]
        counts, sinks_done = self.rt.state.finish_step(
            self.run_id, self.step_id, encoded, joins, self.info.sink, self.attempt, self.owner
        )
        for index, (added, size) in zip(self.info.triggers, counts, strict=True):
            segment = self.plan.segments[index]
            if size == len(segment.trigger) and (added or recheck):
                self._builder().publish(segment)
        sinks_complete = sinks_done is not None and sinks_done[1] == len(self.spec.sinks)
        if sinks_complete and sinks_done is not None and (sinks_done[0] or recheck):
            self._finish_run()

    def _builder(self) -> CanvasBuilder:
        return CanvasBuilder(
            self.rt.app, self.spec, self.plan, self.run_id, {}, self.resumed, self.epoch
        )

    def _finish_run(self) -> None:
        sinks = self.spec.sinks
        values = self.rt.state.results(self.run_id, sinks)
        output = values[0] if len(sinks) == 1 else dict(zip(sinks, values, strict=True))
        self.rt.writer.submit(RunFinal(self.run_id, "succeeded", now(), output=output))


_REASONS: dict[type[BaseException], str] = {
    BadArguments: "bad_arguments",
    UnencodableResult: "unencodable_result",
    MissingResult: "missing_result",
}


def holder_is_dead(holder: str | None, hostname: str) -> bool:
    """Whether a lease ``holder`` (``host:pid:token``) is a process of this host that is gone:
    a pool process the worker replaced after it was killed mid-step."""
    parts = (holder or "").rsplit(":", 2)
    if len(parts) != 3 or not hostname or parts[0] != hostname or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False  # a thread of this process (threads pool) may hold it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def unplannable(ctx: dict[str, Any], exc: Exception) -> None:
    """A step whose run cannot be planned here (e.g. its spec names a task this worker lacks)
    fails its run, rather than leaving it pending for the reconciler to retry forever."""
    rt = runtime()
    error = f"the worker could not prepare step {ctx.get('step_id')!r}: {exc!r}"
    log.error("run %s: %s", ctx.get("run_id"), error)
    rt.state.fail(ctx["run_id"], ctx.get("step_id"), error)
    rt.writer.submit(
        RunFinal(ctx["run_id"], "failed", now(), error=error, error_step=ctx.get("step_id"))
    )


def fail_run(rt: Runtime, run_id: str, step_id: str, error: str) -> None:
    """Fail the run at ``step_id``: nothing new starts; its steps not started are skipped."""
    rt.state.fail(run_id, step_id, error)
    rt.writer.submit(RunFinal(run_id, "failed", now(), error=error, error_step=step_id))


def schedule_retry(
    task: StepTask, request: Any, ctx: dict[str, Any], delay: float, exc: BaseException
) -> None:
    """Publish the next attempt to run after ``delay`` seconds; raises Celery's ``Retry``.

    The message is noted in Redis first (``RunState.expect_retry``): if the publish fails, or
    the process that holds it dies, the reconciler publishes it again. Short delays are a
    broker countdown; longer ones (a broker would deliver them twice) wait in Redis's sorted set.
    """
    rt = runtime()
    attempt = int(ctx.get("attempt", 1)) + 1
    kwargs = {**(request.kwargs or {}), CTX_KEY: {**ctx, "attempt": attempt}}
    sig = task.signature_from_request(request, request.args, kwargs, retries=request.retries + 1)
    due = time.time() + delay
    rt.state.expect_retry(ctx["run_id"], ctx["step_id"], attempt, dict(sig), due)
    try:
        if delay < rt.longest_broker_delay:
            try:
                sig.apply_async(countdown=delay)
            except Exception:  # the broker is away: the delay pump publishes it once it is back
                rt.delays.add(dict(sig), due)
        else:
            rt.delays.add(dict(sig), due)
    except Exception as publish_error:  # broker and Redis away: the reconciler publishes it
        log.warning(
            "attempt %d of step %r not published now (%s); the reconciler will publish it",
            attempt,
            ctx["step_id"],
            publish_error,
        )
    raise Retry(exc=exc, when=datetime.fromtimestamp(due, UTC))


class StepRequest(Request):  # type: ignore[misc]
    """A step's request in the worker's main process: handles hard time-limit kills.

    Celery handles a hard time limit here, after the pool process was killed (first as a
    failure, then as a timeout): it would record a failure, failing a chord the step belongs
    to, even when the step has attempts left. A step is instead recorded and its next attempt
    published, or it fails for good as Celery would have it.
    """

    _hard_timeout_retried: bool | None = None

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, TimeLimitExceeded) and self._step_timed_out(exc):
            return
        super().on_failure(exc_info, send_failed_event, return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if soft or not (self.kwargs or {}).get(CTX_KEY):
            super().on_timeout(soft, timeout)
        elif self._hard_timeout_retried is None:
            if not self._step_timed_out(TimeLimitExceeded(timeout)):
                super().on_timeout(soft, timeout)
        elif not self._hard_timeout_retried:
            super().on_timeout(soft, timeout)

    def _step_timed_out(self, exc: TimeLimitExceeded) -> bool:
        """Record the killed attempt once; True if its next attempt was published."""
        ctx = (self.kwargs or {}).get(CTX_KEY)
        if not ctx:
            return False
        if self._hard_timeout_retried is None:
            # Celery kills the pool process only after this returns: kill it first, so the
            # attempt cannot overlap the next one if recording it is slow (Redis away)
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(self.worker_pid, signal.SIGKILL)
            timeout = exc.args[0] if exc.args else self.time_limits[1]
            self._hard_timeout_retried = hard_timeout(self.task, ctx, self, timeout)
        if not self._hard_timeout_retried:
            return False
        task_ready(self)
        if self.task.acks_late:
            self.acknowledge()
        log.warning(
            "hard time limit exceeded for %s[%s]: next attempt published", self.name, self.id
        )
        self.send_event("task-retried", exception=repr(exc), traceback="")
        return True


def hard_timeout(task: StepTask, ctx: dict[str, Any], request: Request, timeout: float) -> bool:
    """The pool child was killed at the hard time limit: record the attempt, then publish the
    next one (True) or fail the step and its run (False). An attempt whose result reached Redis
    just before the kill succeeded: it is not failed."""
    exc = TimeLimitExceeded(f"hard time limit ({timeout}s) exceeded")
    _, _, embed = request._payload  # callbacks, chain, chord: prefork leaves them out of the dict
    task.push_request(
        {
            **request.request_dict,
            **(embed or {}),
            "args": list(request.args or ()),
            "kwargs": dict(request.kwargs or {}),
            "hostname": request.hostname,
        }
    )
    try:
        if runtime().state.stored(ctx["run_id"], [ctx["step_id"]]):
            # it finished as the limit struck: a copy of the message finds it done and moves
            # the canvas on (a claim never runs it again)
            task.signature_from_request().apply_async()
            return True
        Step(task, ctx).on_error(exc, tuple(request.args or ()), dict(request.kwargs or {}))
    except Retry:
        return True
    except Exception:
        log.exception("step %r: recording its hard time limit failed", ctx.get("step_id"))
    finally:
        task.pop_request()
    return False


class LeaseKeeper:
    """Keeps the leases of the steps running in this process alive (a thread per process)."""

    def __init__(self) -> None:
        self._leases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pid = 0

    def after_fork(self) -> None:
        """A new pool process starts with no leases and a lock of its own."""
        self._leases = {}
        self._lock = threading.Lock()
        self._pid = 0

    def keep(self, lease: str, owner: str) -> None:
        with self._lock:
            self._leases[lease] = owner
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(
                    target=self._renew, name="orchestrator-leases", daemon=True
                ).start()

    def drop(self, lease: str) -> None:
        with self._lock:
            self._leases.pop(lease, None)

    def _renew(self) -> None:
        rt = runtime()
        period = rt.settings.lease_seconds / 3
        while True:
            time.sleep(period)
            # held during the call: a lease dropped meanwhile must not be re-created after its
            # step released it (renewal re-creates a lease that Redis lost)
            with self._lock:
                try:
                    rt.state.renew(dict(self._leases), int(rt.settings.lease_seconds * 1000))
                except Exception:  # Redis away: renewed (re-created) once it is back
                    continue


LEASES = LeaseKeeper()


def shutdown() -> None:
    """Write every queued history event (worker process shutdown)."""
    from orchestrator.engine import runtime as rt_module

    current = rt_module._runtime
    if current is not None and "writer" in current.__dict__:
        current.writer.close()
