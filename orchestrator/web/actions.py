"""What an operator does from the console: start, cancel, pause, resume or retry a run, and
replay a dead letter; each through the public API (``RunHandle``, ``run_workflow``, the engine's
replay) and recorded in the run's events with who did it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from orchestrator.client import run_workflow
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.replay import replay
from orchestrator.engine.services import Services
from orchestrator.errors import RunNotFound
from orchestrator.status import Trigger

CONTROLS = ("cancel", "pause", "resume", "retry")
EVENT = "operator"  # the kind of a run event that says who did what from the console


class Done(BaseModel):
    """What an action did: ``changed`` is false when a cancelled run had already ended;
    ``new_run_id`` is the run a retry, replay or start began."""

    action: str
    run_id: str | None
    changed: bool
    new_run_id: str | None = None
    message: str


class Actions:
    """An operator's actions on one app's runs."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def control(self, run_id: str, action: str, user: str) -> Done:
        """``cancel``, ``pause``, ``resume`` or ``retry`` the run (``InvalidTransition`` when
        its status does not allow it)."""
        if action not in CONTROLS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(CONTROLS)}")
        if self.services.history.get_run(run_id) is None:
            raise RunNotFound(run_id)
        handle = RunHandle(run_id, self.services)
        new_run_id, changed = None, True
        if action == "cancel":
            changed = handle.cancel(reason=f"cancelled by {user} from the console")
        elif action == "retry":
            new_run_id = handle.retry().id
        else:
            getattr(handle, action)()
        done = f"{action} by {user}" + (f": retried as run {new_run_id}" if new_run_id else "")
        if changed:
            self.services.history.add_event(run_id, EVENT, done)
        message = f"run {run_id}: " + (done if changed else "had already ended")
        return Done(
            action=action, run_id=run_id, changed=changed, new_run_id=new_run_id, message=message
        )

    def signal(self, run_id: str, name: str, payload: Any, user: str) -> Done:
        """Send signal ``name`` with ``payload`` to the run, as ``user`` (``SignalError``,
        ``InvalidTransition`` when it ended, ``RunNotFound``; nothing is sent then)."""
        sent = RunHandle(run_id, self.services).signal(name, payload, sender=f"{user} (console)")
        message = f"run {run_id}: signal {name!r} sent by {user} ({sent.size} bytes)"
        return Done(action="signal", run_id=run_id, changed=True, message=message)

    def replay(self, letter_id: int, user: str) -> Done:
        """Replay a dead letter (``OrchestratorError`` when it was replayed already)."""
        replayed = replay(self.services, letter_id)
        run_id = replayed.letter.run_id
        if run_id is not None:
            self.services.history.add_event(
                run_id, EVENT, f"dead letter {letter_id} replayed by {user}"
            )
        return Done(
            action="replay",
            run_id=run_id,
            changed=True,
            new_run_id=replayed.run_id,
            message=str(replayed),
        )

    def start(
        self,
        workflow: str,
        inputs: dict[str, Any],
        user: str,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> Done:
        """Start a run, validated as ``run_workflow`` validates it (``InputError`` ...)."""
        handle = run_workflow(
            workflow,
            inputs,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
            trigger=Trigger.API,
            app=self.services.app,
        )
        self.services.history.add_event(handle.id, EVENT, f"started by {user}")
        return Done(
            action="start",
            run_id=handle.id,
            changed=True,
            new_run_id=handle.id,
            message=f"run {handle.id} of {workflow} started",
        )
