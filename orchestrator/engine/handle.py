"""A run's handle: its status, steps and output, waiting for it, and control over it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from orchestrator.codec import decode
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.hooks import cancel_run
from orchestrator.engine.inherit import inherited
from orchestrator.engine.run_context import run_context
from orchestrator.engine.services import Services
from orchestrator.engine.signals import send_signal
from orchestrator.engine.submit import Submission, submit
from orchestrator.engine.waiting import with_waits
from orchestrator.errors import InvalidTransition, RunNotFound, ServiceUnavailable, WorkflowFailed
from orchestrator.records import RunRecord, SignalRecord, StepRecord
from orchestrator.status import RunStatus, StepStatus, Trigger

StepRun = StepRecord


class RunHandle:
    """A workflow run: its status, steps and output, and control over it."""

    def __init__(self, run_id: str, rt: Services) -> None:
        self.id = run_id
        self._rt = rt

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def record(self) -> RunRecord:
        self._rt.ends_ahead.settle([self.id])
        found = self._rt.history.get_run(self.id)
        if found is None:
            raise RunNotFound(self.id)
        return found

    def status(self) -> RunStatus:
        return self.record().status

    def steps(self) -> list[StepRun]:
        """The run's steps (and ``for_each`` items); a step that has not ended says what it
        waits for (``waiting_for``, ``waiting_detail``) while the run goes on."""
        self._rt.ends_ahead.settle([self.id])
        steps = self._rt.history.get_steps(self.id)
        if all(s.status.terminal for s in steps):
            return steps
        return with_waits(self._rt, self.record(), steps)

    def pending(self) -> list[StepRun]:
        """The run's steps that have not ended, each with what it waits for (``waiting_for``
        is None for a step that runs, or waits for the steps it runs after)."""
        return [s for s in self.steps() if not s.status.terminal]

    def context(self) -> dict[str, Any]:
        """The run's shared context (what its steps set with ``current_run.context.set``),
        also after the run ended: from Redis while it holds it, else from history."""
        self.record()  # an unknown run raises RunNotFound
        return run_context(self._rt, self.id)

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

        Wakes on the run's end announced in Redis, and meanwhile re-reads PostgreSQL only
        every ``progress_every`` seconds (calling ``on_progress``), never in a tight loop. A
        run that succeeds is announced by its worker with its output as soon as it ends, before
        history's transaction; this process's next read of the run then waits (a few
        milliseconds) until history has the end too (``engine.ends_ahead``).
        """
        limit = 10.0**9 if timeout is None else timeout
        for notice in self._rt.state.watch_done(self.id, limit, tick=progress_every):
            if notice is not None and notice.output is not None:
                self._rt.ends_ahead.note(self.id)
                return decode(notice.output)
            try:
                record = self.record()
            except ServiceUnavailable:
                continue  # PostgreSQL is restarting: look again at the next tick
            if record.status.terminal:
                return self._outcome(record)
            if on_progress is not None:
                on_progress(record)
        record = self.record()
        if record.status.terminal:
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
        """Cancel the run and its unfinished children: nothing new starts; running steps
        finish. False if it had ended."""
        if self.record().status.terminal:
            return False
        return cancel_run(self._rt, self.id, reason)

    def signal(self, name: str, payload: Any = None, *, sender: str | None = None) -> SignalRecord:
        """Send signal ``name`` with a JSON ``payload``: it ends the ``wait_for`` steps waiting
        for it, is kept for one reached later, and running steps read it
        (``current_run.signals(name)``). ``RunNotFound``, ``InvalidTransition`` (the run
        ended) or ``SignalError`` (no name, not JSON), with nothing written."""
        return send_signal(self._rt, self.id, name, payload, sender)

    def signals(self, name: str | None = None) -> list[SignalRecord]:
        """The signals sent to the run (of one ``name``), oldest first."""
        return self._rt.waits.signals(self.id, name)

    def children(self) -> list[RunHandle]:
        """The runs of child workflows that this run's steps started, oldest first."""
        return [RunHandle(r.id, self._rt) for r in self._rt.history.children(self.id)]

    def pause(self) -> bool:
        """Steps not yet started wait (running ones finish); False if the run had ended."""
        self._rt.ends_ahead.settle([self.id])
        state = self._rt.state
        if not self._rt.history.transition(
            self.id,
            (RunStatus.PENDING, RunStatus.RUNNING),
            RunStatus.PAUSED,
            lambda: state.pause(self.id),
        ):
            self._refuse("paused", (RunStatus.PENDING, RunStatus.RUNNING))
        self._rt.history.add_event(self.id, "paused")
        for child in self.children():
            with contextlib.suppress(InvalidTransition):
                child.pause()
        return True

    def resume(self) -> bool:
        """Publish the steps that waited while the run was paused."""
        parked: list[dict[str, Any]] = []
        if not self._rt.history.transition(
            self.id,
            (RunStatus.PAUSED,),
            RunStatus.RUNNING,
            lambda: parked.extend(self._rt.state.resume(self.id)),
        ):
            self._refuse("resumed", (RunStatus.PAUSED,))
        for message in parked:
            self._rt.app.signature(message).apply_async()
        self._rt.history.add_event(self.id, "resumed", f"{len(parked)} waiting steps published")
        for child in self.children():
            with contextlib.suppress(InvalidTransition):
                child.resume()
        return True

    def _refuse(self, action: str, allowed: tuple[RunStatus, ...]) -> None:
        status = self.record().status
        raise InvalidTransition(
            f"run {self.id} is {status}; only a {' or '.join(allowed)} run can be {action}"
        )

    def events(self) -> list[tuple[Any, str, str | None]]:
        """What was done to the run (paused, resumed, cancelled, retried, recovered), in order."""
        return self._rt.history.events(self.id)

    def retry(self) -> RunHandle:
        """A new run of this failed or cancelled run: succeeded steps keep their outputs, only
        failed and never-run steps execute (``parent_run_id`` is this run).

        Refused while a step of this run still runs (its effects would happen twice); a step
        that succeeded after the run ended is inherited (``engine.inherit``). Retrying the same
        run again returns the run the first retry started.
        """
        record = self.record()
        if record.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            raise InvalidTransition(
                f"run {self.id} is {record.status}; only failed or cancelled runs can be retried"
            )
        data = self._rt.history.load_spec(record.workflow_version)
        if data is None:
            raise RunNotFound(self.id)
        done = inherited(self._rt, self.id, self.steps())
        run_id = submit(
            self._rt,
            WorkflowSpec.model_validate(data),
            Submission(
                inputs=record.inputs,
                trigger=Trigger.RETRY,
                idempotency_key=f"retry-of:{self.id}",
                correlation_id=record.correlation_id,
                tenant_id=record.tenant_id,
                parent_run_id=self.id,
                done=done,
                priority=record.priority,
            ),
        )
        return RunHandle(run_id, self._rt)

    def step_status(self) -> dict[str, StepStatus]:
        return {s.step_id: s.status for s in self.steps()}
