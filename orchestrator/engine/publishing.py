"""What the engine does with each step message an app's process publishes, whoever publishes it.

Celery publishes some of a run's messages itself: the next task of a chain, the body of a chord
(from the backend, once the header's last part returns), a ``Task.retry``. Its
``before_task_publish`` signal sees them all, with the message's properties still open to change:

* a step message that lost its priority on the way is given it back
  (:func:`orchestrator.engine.priorities.restore_priority`; Celery's chain passes
  ``priority=None`` into the chord it starts, which overwrites the chord body's own);
* a step message under a ``queue_timeout`` is noted
  (:func:`orchestrator.engine.queue_timeouts.note_queued`).

``create_app`` installs one hook per app (:func:`install`). The signal is process-wide: while a
task executes, only the hook of that task's app acts (the app that publishes); outside a task (a
client submitting) each app's hook acts, which the client's explicit priorities and the
harmlessness of an extra note make safe.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, current_task, signals

from orchestrator.engine.canvas import CTX_KEY
from orchestrator.engine.priorities import restore_priority
from orchestrator.engine.queue_timeouts import note_queued
from orchestrator.engine.services import Services

ATTRIBUTE = "orchestrator_publish_hook"


def step_context(body: Any) -> dict[str, Any] | None:
    """The step context in a protocol-2 message body ``(args, kwargs, embed)``, if any."""
    if isinstance(body, (tuple, list)) and len(body) >= 2 and isinstance(body[1], dict):
        ctx = body[1].get(CTX_KEY)
        if isinstance(ctx, dict) and "run_id" in ctx and "step_id" in ctx:
            return ctx
    return None


class PublishHook:
    """The engine's part in publishing, for one app's services."""

    def __init__(self, rt: Services) -> None:
        self.rt = rt

    def published(
        self,
        body: Any = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        ctx = step_context(body)
        if ctx is None or not self._publishing():
            return
        if properties is not None:
            restore_priority(self.rt, ctx, properties)
        note_queued(self.rt, ctx, headers)

    def _publishing(self) -> bool:
        """Whether this hook's app is the one publishing (see the module's docstring)."""
        executing = current_task._get_current_object() if current_task else None
        return executing is None or getattr(executing, "app", None) is self.rt.app


def install(app: Celery, rt: Services) -> None:
    """Hook ``app``'s services into Celery's publishing. The signal holds a weak reference (a
    test's app can be collected); the app holds the hook."""
    hook = PublishHook(rt)
    setattr(app, ATTRIBUTE, hook)
    signals.before_task_publish.connect(hook.published)
