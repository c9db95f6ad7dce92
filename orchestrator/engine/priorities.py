"""A step message's priority, given back where Celery dropped it on the way.

The canvas gives every step's signature its priority (``CanvasBuilder.options``). Celery's
chain passes ``priority=None`` to the chord it continues with (``celery.app.trace``), and
``chord.run`` copies that into the chord body's options, so the body would be published with no
priority: the top of a Redis queue, the bottom of a RabbitMQ one. The publish hook
(:mod:`orchestrator.engine.publishing`) calls :func:`restore_priority` for each step message
published with none, and sets the step's own (or its run's) as the canvas would have.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.core.priorities import broker_priority, effective, reversed_by
from orchestrator.engine.services import PlanKey, Services

log = logging.getLogger("orchestrator")


def restore_priority(rt: Services, ctx: dict[str, Any], properties: dict[str, Any]) -> None:
    """Set ``properties["priority"]`` of a step message published without one."""
    if properties.get("priority") is not None:
        return
    priority = effective(_step_priority(rt, ctx), ctx.get("priority"))
    properties["priority"] = broker_priority(priority, reversed_by(rt.app.conf.broker_url))


def _step_priority(rt: Services, ctx: dict[str, Any]) -> int | None:
    """The step's own priority, from the run's plan (cached in the process that runs it)."""
    resumed, epoch = bool(ctx.get("resumed")), int(ctx.get("epoch", 0))
    key = PlanKey(str(ctx["version"]), str(ctx["run_id"]) if resumed or epoch else None, epoch)
    try:
        spec, _ = rt.plan(key)
        return spec.step(str(ctx["step_id"])).priority
    except Exception as exc:  # no plan here (PostgreSQL away): the run's priority stands
        log.warning("priority of step %r not known (%s); its run's is used", ctx["step_id"], exc)
        return None


def queue_refused(exc: BaseException) -> str | None:
    """What to do when RabbitMQ refused to declare a queue with ``x-max-priority`` because it
    was declared before without it (``PRECONDITION_FAILED``); None for any other error."""
    text = " ".join(str(exc).split())
    if getattr(exc, "code", None) != 406 or "x-max-priority" not in text:
        return None
    return (
        f"not published: RabbitMQ refused the queue ({text}); it was declared before without "
        "x-max-priority: delete it once it is drained (it is then declared again with it), or "
        "set ORCHESTRATOR_PRIORITY_QUEUES=false to run without priorities"
    )
