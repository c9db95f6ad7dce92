"""One delivery of one step of one run: the state machine a worker runs for a step's message.

It checks the run's control flag (a cancelled or failed run starts nothing new), claims the
step's attempt with a lease, builds the step's arguments (run inputs, the chained result, or its
parents' results), asks the breaker, records the attempt and calls the function. How the
delivery then ends (its result counted toward joins and the run's end, standing down, a dead
letter) is :mod:`orchestrator.engine.finish`'s; a step that ends without its function being
called (skipped, a ``for_each`` fanning out, a child workflow's start and end) is
:mod:`orchestrator.engine.apart`'s, and an item of a ``for_each`` is a step of its own here
(``parse[3]``, fetched by index). A failure is retried per the step's policy
(``orchestrator.engine.failure``), or fails the step and its run for good with a dead letter.
One Redis round trip before the call and one after; history goes to the batched writer.
"""

from __future__ import annotations

import logging
import traceback as tb
from typing import TYPE_CHECKING, Any, NoReturn

from celery.exceptions import Ignore

from orchestrator.codec import UnencodableValue, encode
from orchestrator.context import RunContext, reset_current, set_current
from orchestrator.core.planner import Plan, StepPlan
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.apart import ended_apart
from orchestrator.engine.calling import effective_policy, guarded, signature_of
from orchestrator.engine.canvas import item_input, record_id
from orchestrator.engine.children import waiting_owner
from orchestrator.engine.conditions import SKIPPED, is_skipped
from orchestrator.engine.deferral import defer
from orchestrator.engine.failure import (
    REASONS,
    BadArguments,
    MissingResult,
    NotRetryable,
    UnencodableResult,
    fail_run,
    now,
    schedule_retry,
)
from orchestrator.engine.fanout import item_done, item_succeeded, publish_more
from orchestrator.engine.finish import (
    already_done,
    dead_letter,
    stand_down,
    succeeded,
    undeliverable,
)
from orchestrator.engine.leases import holder_is_dead, lease_owner
from orchestrator.engine.queue_timeouts import received
from orchestrator.engine.rate_limits import Counted, give_back, take_start
from orchestrator.engine.run_context import SharedContext
from orchestrator.engine.services import PlanKey, Services, services_of
from orchestrator.engine.sleeping import WAKE, parked_owner
from orchestrator.records import Claim, Lease, StepEvent
from orchestrator.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from orchestrator.engine.task import StepTask

log = logging.getLogger("orchestrator.step")


class Step:
    """One delivery of one step of one run."""

    def __init__(self, task: StepTask, ctx: dict[str, Any]) -> None:
        self.task = task
        self.ctx = ctx
        self.rt: Services = services_of(task.app)
        self.run_id: str = ctx["run_id"]
        self.spec_id: str = ctx["step_id"]
        self.item: int | None = ctx.get("item")
        self.count = int(ctx.get("count", 0))  # a for_each step's number of items
        self.step_id: str = record_id(ctx)
        self.resumed = bool(ctx.get("resumed"))
        self.epoch = int(ctx.get("epoch", 0))
        key = PlanKey(
            ctx["version"], self.run_id if self.resumed or self.epoch else None, self.epoch
        )
        self.spec: WorkflowSpec
        self.plan: Plan
        self.spec, self.plan = self.rt.plan(key)
        self.info: StepPlan = self.plan.steps[self.spec_id]
        self.spec_step = self.spec.step(self.spec_id)
        self.attempt = int(ctx.get("attempt", 1))
        self.run_priority: int | None = ctx.get("priority")  # for the segments it publishes
        self.policy = effective_policy(task, self.spec_step)
        self.owner = lease_owner(task.request.hostname)

    def execute(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if "publish_from" in self.ctx:
            return publish_more(self)
        received(self.rt, self.ctx)  # out of its queue: its queue_timeout no longer runs
        parents = self._parents()
        claim = self._claim(parents)
        if claim.outcome == "done" and self.item is not None:
            return item_done(self, claim.result)
        if claim.outcome == "done":
            return already_done(self, claim.result)
        if claim.outcome == "missing":
            self._fail_unstarted(MissingResult(self._missing(claim.flag)), args, kwargs)
        if claim.outcome != "go":
            raise Ignore()  # another live delivery is executing this step
        if claim.deliveries > self.rt.settings.max_deliveries:
            undeliverable(self, claim.deliveries, args, kwargs)
        if self._ended_unrun(dict(zip(parents, claim.parents, strict=True)), args, kwargs):
            return None
        args = self.arguments(args, parents, claim.parents)
        counted = self._ask_rate_limit(args, kwargs)
        trial = self._ask_breaker(counted)
        self.record(
            StepStatus.RUNNING, starts_run=not self.plan.segments[self.info.segment].trigger
        )
        token = set_current(
            RunContext(
                self.run_id,
                self.step_id,
                self.attempt,
                self.spec.name,
                self.task.request.id or "",
                lambda: self.rt.state.inputs(self.run_id),
                item=args[0] if self.item is not None else None,
                item_index=self.item,
                _context=SharedContext(self.rt, self.run_id, self.spec.name, self.step_id),
                _signals=lambda name: [s.payload for s in self.rt.waits.signals(self.run_id, name)],
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
            self.rt.leases.drop(self.lease_key)
        if self.item is not None:
            item_succeeded(self, encoded)
        else:
            succeeded(self, result, encoded)
        return result

    def _ended_unrun(
        self, values: dict[str, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        """Whether the step ended without its function being called: skipped (its ``when``, a
        skipped dependency), a ``for_each`` step that fanned out its items, or a step that
        started (or, its child run ended, ends) its child workflow's run."""
        try:
            return ended_apart(self, values)
        except NotRetryable as exc:  # a `when` that cannot be evaluated, not a list to map
            self.rt.leases.drop(self.lease_key)
            self._fail_unstarted(exc, args, kwargs)

    def _parents(self) -> list[str]:
        """The result fields the claim reads: the parents' results, or an item's input."""
        if self.item is not None:
            return [item_input(self.spec_id, self.item)]
        return list(self.info.parents) if self.info.mode == "fetch" else []

    def arguments(
        self, args: tuple[Any, ...], parents: list[str], values: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        """The call's positional arguments: the item, the parents' results, or as delivered."""
        if self.item is not None:
            return (values[0],)
        if self.info.mode != "fetch":
            return args
        shown = [None if is_skipped(v) else v for v in values]
        return (shown[0] if len(shown) == 1 else dict(zip(parents, shown, strict=True)),)

    @property
    def lease_key(self) -> Lease:
        return (self.run_id, self.step_id, self.attempt)

    def _claim(self, parents: list[str]) -> Claim:
        """Claim the step; a paused run parks it, a cancelled or failed run stands it down."""
        lease_ms = int(self.rt.settings.lease_seconds * 1000)
        # a step waiting for its child run is held in the child's name until the child's end
        steal, restored = waiting_owner(self.ctx["child"]) if "child" in self.ctx else "", False
        if WAKE in self.ctx:  # a parked sleep/wait_for step's wake-up takes its lease over
            steal = parked_owner(self.step_id)
        while True:
            claim = self.rt.state.claim(
                self.run_id, self.step_id, self.attempt, self.owner, lease_ms, parents, steal
            )
            if claim.outcome == "go":
                self.rt.leases.keep(self.lease_key, self.owner)
                return claim
            if claim.outcome == "busy" and not steal and holder_is_dead(claim.flag, self.host):
                steal = claim.flag or ""  # its pool process was killed: take the step over
                continue
            if claim.outcome == "missing" and not restored:
                self._restore_results()
                restored = True
                continue
            if claim.outcome != "flag" or claim.flag != RunStatus.PAUSED:
                if claim.outcome == "flag":
                    stand_down(self, claim.flag or RunStatus.CANCELLED)
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
        steps = self.rt.history.get_steps(self.run_id)
        done = {s.step_id: s.result for s in steps if s.status == StepStatus.SUCCEEDED}
        done.update({s.step_id: SKIPPED for s in steps if s.status == StepStatus.SKIPPED})
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
    ) -> NoReturn:
        self.on_error(exc, args, kwargs)
        raise exc

    def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], trial: bool | None) -> Any:
        try:
            signature_of(self.task).bind(*args, **kwargs)
        except TypeError as exc:
            raise BadArguments(f"{self.task.name} cannot take these arguments: {exc}") from exc
        if trial is None or self.task.breaker is None:
            return self.task.run(*args, **kwargs)
        return guarded(
            self.rt.breakers, self.task.breaker, trial, lambda: self.task.run(*args, **kwargs)
        )

    def _ask_rate_limit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Counted | None:
        """Count this start against the step's rate limit, or defer the step until its turn."""
        try:
            return take_start(self)
        except NotRetryable as exc:  # its key_expr cannot be evaluated with the run's inputs
            self.rt.leases.drop(self.lease_key)
            self._fail_unstarted(exc, args, kwargs)

    def _ask_breaker(self, counted: Counted | None = None) -> bool | None:
        """None without a breaker; whether this call is the half-open trial; or defer the step
        (giving back the start ``counted`` against its rate limit)."""
        cfg = self.task.breaker
        if cfg is None:
            return None
        decision, wait = self.rt.breakers.acquire(cfg)
        if decision == "defer":
            give_back(self.rt, counted)
            defer(self, wait)  # not an attempt: the same attempt is delivered again later
        return decision == "trial"

    def record(
        self, status: StepStatus, step_id: str | None = None, attempt: int = 0, **extra: Any
    ) -> None:
        """Hand an event of this attempt (or of ``step_id``'s ``attempt``) to the writer."""
        self.rt.writer.submit(
            StepEvent(
                self.run_id,
                step_id or self.step_id,
                attempt or self.attempt,
                status,
                now(),
                worker=self.task.request.hostname,
                **extra,
            )
        )

    def on_error(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Retry per the policy (raises ``Retry``), or fail the step and its run for good."""
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(tb.format_exception(exc))
        retryable = not isinstance(exc, NotRetryable)
        self.rt.state.release(self.run_id, self.step_id, self.attempt, self.owner)
        if self.rt.state.failure(self.run_id) is not None:
            # the run was cancelled or failed meanwhile: no next attempt, no second failure
            self.record(StepStatus.FAILED, error=error, traceback=trace)
            return
        if retryable and self.policy and self.policy.should_retry(exc, self.attempt):
            delay = self.policy.delay(self.attempt)
            log.warning("attempt %d failed (%s); retrying in %.2fs", self.attempt, error, delay)
            self.record(StepStatus.RETRYING, error=error, traceback=trace)
            schedule_retry(self.rt, self.task, self.task.request, self.ctx, delay, exc)
        log.error("attempt %d failed for good: %s", self.attempt, error)
        self.record(StepStatus.FAILED, error=error, traceback=trace)
        if self.item is not None:  # an item that fails for good fails its mapped step
            self.record(StepStatus.FAILED, self.spec_id, 1, error=f"{self.step_id}: {error}")
        reason = "exhausted" if retryable else REASONS.get(type(exc), "not_retryable")
        dead_letter(self, reason, args, kwargs, error, trace)
        fail_run(self.rt, self.run_id, self.step_id, error)
