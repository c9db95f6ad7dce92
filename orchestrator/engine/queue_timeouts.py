"""Queue timeouts, the engine's half: note a step's message when it is published, forget it when
a worker receives it.

A step with ``queue_timeout`` carries it in its context (``qt``). Whatever publishes the step's
message (a submit, a worker publishing the next segment, Celery moving a chain or chord on, a
retry, a deferral by a breaker or a rate limit, the delay pump, a resume) passes through
Celery's ``before_task_publish`` signal, where the message is noted as due ``queue_timeout``
seconds after it can first be taken: now, or its ETA for a countdown. So the time a step waits
for a retry delay, a breaker or a rate limit does not count as queued, and each publication
starts the clock again. The worker that receives the message forgets it before claiming the
step, whatever the claim decides. What is still noted when due was never received:
``orchestrator.ops.queue_timeouts`` fails it, also when no worker consumes its queue at all.

:mod:`orchestrator.engine.publishing` calls :func:`note_queued` for each message published; a
note that cannot be written is logged, and never fails the publish.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from orchestrator.engine.canvas import QUEUE_TIMEOUT_KEY, record_id
from orchestrator.engine.services import Services

log = logging.getLogger("orchestrator.queue_timeouts")


def member(ctx: dict[str, Any]) -> str:
    """The entry of one delivery target: ``run/step/attempt`` (an item's step is ``s[3]``)."""
    return f"{ctx['run_id']}/{record_id(ctx)}/{int(ctx.get('attempt', 1))}"


def parse_member(entry: str) -> tuple[str, str, int]:
    """``(run_id, step_id, attempt)`` of an entry made by :func:`member`."""
    run_id, step_id, attempt = entry.split("/", 2)
    return run_id, step_id, int(attempt)


def timed(ctx: Any) -> bool:
    """Whether a step context is under a queue timeout (a batch-publishing message is not)."""
    return isinstance(ctx, dict) and bool(ctx.get(QUEUE_TIMEOUT_KEY)) and "publish_from" not in ctx


def received(rt: Services, ctx: dict[str, Any]) -> None:
    """A worker received the step's message: it no longer waits in its queue."""
    if timed(ctx):
        rt.queue_timeouts.received(member(ctx))


def first_take(headers: dict[str, Any] | None, now: float) -> float:
    """When a published message can first be taken: its ETA, or now."""
    eta = (headers or {}).get("eta")
    if not eta:
        return now
    try:
        return max(now, datetime.fromisoformat(str(eta)).timestamp())
    except ValueError:
        return now


def note_queued(rt: Services, ctx: dict[str, Any], headers: dict[str, Any] | None) -> None:
    """A step's message is being published: note it, due ``queue_timeout`` seconds after it
    can first be taken (never fails the publish)."""
    if not timed(ctx):
        return
    try:
        due = first_take(headers, time.time()) + float(ctx[QUEUE_TIMEOUT_KEY])
        rt.queue_timeouts.expect(member(ctx), due)
    except Exception as exc:  # Redis away: never fail the publish for it
        log.warning(
            "queue_timeout of step %r (run %s) not noted, it will not fire: %s",
            ctx.get("step_id"),
            ctx.get("run_id"),
            exc,
        )
