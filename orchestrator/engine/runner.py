"""Use cases: submit a run, look runs up, wait for them, and control them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.core import registry
from orchestrator.core.planner import Plan, build_plan
from orchestrator.core.spec import WorkflowSpec, check_inputs, check_tasks
from orchestrator.engine.canvas import CanvasBuilder, task_id
from orchestrator.engine.runtime import PlanKey, Runtime, runtime
from orchestrator.errors import InvalidTransition, RunNotFound, ServiceUnavailable, WorkflowFailed
from orchestrator.records import NewRun, NewStep, RunRecord, StepRecord
from orchestrator.settings import redact
from orchestrator.status import RunStatus, StepStatus, Trigger

StepRun = StepRecord


@dataclass(frozen=True)
class Submission:
    """What a run is started with, besides the workflow."""

    inputs: dict[str, Any]
    trigger: Trigger = Trigger.API
    idempotency_key: str | None = None
    correlation_id: str | None = None
    tenant_id: str | None = None
    parent_run_id: str | None = None
    done: dict[str, Any] | None = None  # step id -> result, for a retried run


def resolve(workflow: WorkflowSpec | str | Any) -> WorkflowSpec:
    """A spec from a spec, a ``Workflow`` (anything with ``.spec``) or a registered name."""
    if isinstance(workflow, WorkflowSpec):
        return workflow
    spec = getattr(workflow, "spec", None)
    if isinstance(spec, WorkflowSpec):
        return spec
    runtime().load_modules()
    return registry.get(str(workflow))


def submit(spec: WorkflowSpec, sub: Submission) -> RunHandle:
    """Validate, write the run and its steps, then publish the first segments."""
    rt = runtime()
    rt.load_modules()
    check_tasks(spec, rt.catalog)
    check_inputs(spec, sub.inputs, rt.catalog)
    done = sub.done or {}
    plan = build_plan(spec, frozenset(done))
    run_id = str(uuid.uuid4())
    steps = [
        NewStep(
            s.id,
            s.task,
            task_id(run_id, s.id),
            status="succeeded" if s.id in done else "pending",
            result=done.get(s.id),
            has_result=s.id in done,
        )
        for s in spec.steps
    ]
    record = NewRun(
        id=run_id,
        workflow=spec.name,
        version=spec.version,
        spec=spec.model_dump(mode="json"),
        inputs=sub.inputs,
        trigger=str(sub.trigger),
        idempotency_key=sub.idempotency_key,
        correlation_id=sub.correlation_id,
        tenant_id=sub.tenant_id,
        parent_run_id=sub.parent_run_id,
        done_steps=list(done),
    )
    rt.state.ping()
    final_id, created = rt.store.create_run(record, steps)
    if not created:
        return RunHandle(final_id, rt)
    rt.remember(PlanKey(spec.version, run_id if done else None), spec, plan)
    rt.state.init_run(run_id, sub.inputs, done, [s for s in spec.sinks if s in done])
    if sub.parent_run_id:
        rt.store.add_event(sub.parent_run_id, "retried", f"as run {run_id}")
    builder = CanvasBuilder(rt.app, spec, plan, run_id, sub.inputs, resumed=bool(done))
    publish_start(rt, builder, plan)
    if spec.deadline:
        from orchestrator.ops.maintenance import (
            schedule_deadline,
        )  # builds the app: only when needed

        schedule_deadline(run_id, spec.deadline)
    return RunHandle(run_id, rt)


def publish_start(rt: Runtime, builder: CanvasBuilder, plan: Plan) -> None:
    """Publish the segments a run starts with, then note that it was published.

    A broker that cannot be reached fails the run (it is never left pending) and raises.
    """
    try:
        for segment in plan.start:
            builder.publish(segment)
    except Exception as exc:  # connection refused, timed out, hung: never leave it pending
        error = f"not published: the broker at {redact(rt.settings.broker_url)} is unreachable"
        rt.store.fail_run(builder.run_id, error)
        raise ServiceUnavailable(
            "the Celery broker",
            redact(rt.settings.broker_url),
            str(exc),
            f"Run {builder.run_id} was recorded and marked failed; start the broker (or set "
            "ORCHESTRATOR_BROKER_URL) and submit again",
        ) from exc
    rt.store.mark_published(builder.run_id)


def run_workflow(
    workflow: WorkflowSpec | str | Any,
    inputs: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    correlation_id: str | None = None,
    tenant_id: str | None = None,
    trigger: Trigger | str = Trigger.API,
) -> RunHandle:
    """Start a run of ``workflow`` (a ``Workflow``, spec, or registered name); returns its handle.

    Two calls with one ``idempotency_key`` start one run; both return its handle.
    """
    spec = resolve(workflow)
    sub = Submission(
        inputs=dict(inputs or {}),
        trigger=Trigger(trigger),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
        tenant_id=tenant_id,
    )
    return submit(spec, sub)


def get_run(run_id: str) -> RunHandle:
    """The handle of an existing run; raises ``RunNotFound`` for an unknown id."""
    rt = runtime()
    if rt.store.get_run(run_id) is None:
        raise RunNotFound(run_id)
    return RunHandle(str(run_id), rt)


def list_runs(
    workflow: str | None = None, status: RunStatus | str | None = None, limit: int = 50
) -> list[RunRecord]:
    """Newest runs first, optionally of one workflow and/or status."""
    return runtime().store.list_runs(workflow, str(status) if status else None, limit)


class RunHandle:
    """A workflow run: its status, steps and output, and control over it."""

    def __init__(self, run_id: str, rt: Runtime | None = None) -> None:
        self.id = run_id
        self._rt = rt or runtime()

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def record(self) -> RunRecord:
        found = self._rt.store.get_run(self.id)
        if found is None:
            raise RunNotFound(self.id)
        return found

    def status(self) -> RunStatus:
        return RunStatus(self.record().status)

    def steps(self) -> list[StepRun]:
        return self._rt.store.get_steps(self.id)

    @property
    def output(self) -> Any:
        return self.record().output

    def wait(
        self,
        timeout: float | None = 60.0,
        on_progress: Callable[[RunRecord], None] | None = None,
        progress_every: float = 2.0,
    ) -> Any:
        """Block until the run ends; its output, or ``WorkflowFailed`` / ``TimeoutError``.

        Wakes on the run's completion message in Redis, and meanwhile re-reads PostgreSQL only
        every ``progress_every`` seconds (calling ``on_progress``), never in a tight loop.
        """
        limit = 10.0**9 if timeout is None else timeout
        for _announced in self._rt.state.watch_done(self.id, limit, tick=progress_every):
            try:
                record = self.record()
            except ServiceUnavailable:
                continue  # PostgreSQL is restarting: look again at the next tick
            if RunStatus(record.status).terminal:
                return self._outcome(record)
            if on_progress is not None:
                on_progress(record)
        record = self.record()
        if RunStatus(record.status).terminal:
            return self._outcome(record)
        raise TimeoutError(
            f"run {self.id} of workflow {record.workflow!r} is still {record.status} after "
            f"{timeout}s; `orchestrator show {self.id}` shows where it is"
        )

    def _outcome(self, record: RunRecord) -> Any:
        if record.status == RunStatus.SUCCEEDED:
            return record.output
        raise WorkflowFailed(
            record.id, record.workflow, record.status, record.error_step, record.error
        )

    def cancel(self, reason: str = "cancelled by request") -> bool:
        """Cancel the run: nothing new starts; running steps finish. False if it had ended."""
        if RunStatus(self.record().status).terminal:
            return False
        self._rt.state.set_flag(self.id, "cancelled")
        if not self._rt.store.cancel_run(self.id, reason):
            return False
        self._rt.state.resume(self.id)  # parked messages of a paused run are dropped
        self._rt.store.add_event(self.id, "cancelled", reason)
        pending = self._rt.store.unfinished_task_ids(self.id)
        if pending:
            self._rt.app.control.revoke(pending)
        self._rt.state.notify_done(self.id, "cancelled")
        self._rt.state.end(self.id, "cancelled")
        return True

    def pause(self) -> bool:
        """Steps not yet started wait (running ones finish); False if the run had ended."""
        state = self._rt.state
        if not self._rt.store.transition(
            self.id, ("pending", "running"), RunStatus.PAUSED, lambda: state.pause(self.id)
        ):
            self._refuse("paused", (RunStatus.PENDING, RunStatus.RUNNING))
        self._rt.store.add_event(self.id, "paused")
        return True

    def resume(self) -> bool:
        """Publish the steps that waited while the run was paused."""
        parked: list[dict[str, Any]] = []
        if not self._rt.store.transition(
            self.id,
            ("paused",),
            RunStatus.RUNNING,
            lambda: parked.extend(self._rt.state.resume(self.id)),
        ):
            self._refuse("resumed", (RunStatus.PAUSED,))
        for message in parked:
            self._rt.app.signature(message).apply_async()
        self._rt.store.add_event(self.id, "resumed", f"{len(parked)} waiting steps published")
        return True

    def _refuse(self, action: str, allowed: tuple[RunStatus, ...]) -> None:
        status = self.record().status
        raise InvalidTransition(
            f"run {self.id} is {status}; only a {' or '.join(allowed)} run can be {action}"
        )

    def events(self) -> list[tuple[Any, str, str | None]]:
        """What was done to the run (paused, resumed, cancelled, retried, recovered), in order."""
        return self._rt.store.events(self.id)

    def retry(self) -> RunHandle:
        """A new run of this failed or cancelled run: succeeded steps keep their outputs, only
        failed and never-run steps execute (``parent_run_id`` is this run).

        Refused while a step of this run still runs (its effects would happen twice). Retrying
        the same run again returns the run the first retry started.
        """
        record = self.record()
        if record.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise InvalidTransition(
                f"run {self.id} is {record.status}; only failed or cancelled runs can be retried"
            )
        data = self._rt.store.load_spec(record.workflow_version)
        if data is None:
            raise RunNotFound(self.id)
        steps = self.steps()
        self._refuse_while_running(steps)
        done = {s.step_id: s.result for s in steps if s.status == StepStatus.SUCCEEDED}
        return submit(
            WorkflowSpec.model_validate(data),
            Submission(
                inputs=record.inputs,
                trigger=Trigger.RETRY,
                idempotency_key=f"retry-of:{self.id}",
                correlation_id=record.correlation_id,
                tenant_id=record.tenant_id,
                parent_run_id=self.id,
                done=done,
            ),
        )

    def _refuse_while_running(self, steps: list[StepRun]) -> None:
        state = self._rt.state
        running = [
            s.step_id
            for s in steps
            if s.status == StepStatus.RUNNING
            and state.lease_alive(self.id, s.step_id, max(1, s.attempts))
        ]
        if running:
            raise InvalidTransition(
                f"run {self.id} still has steps running ({', '.join(running)}); retry it once "
                "they end, or their effects would happen twice"
            )

    def step_status(self) -> dict[str, StepStatus]:
        return {s.step_id: StepStatus(s.status) for s in self.steps()}
