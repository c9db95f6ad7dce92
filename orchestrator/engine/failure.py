"""How a step fails: errors another attempt cannot mend, failing a run, scheduling a retry.

Attempts are the framework's own: Celery's ``max_retries`` never caps them (it is ``None`` on
every step task), and the next attempt is published here, never by ``Task.retry`` (which
re-raises instead of publishing where Celery handles a hard time limit, in the worker's main
process). Until a delivery of the next attempt is claimed, its message is also noted in Redis,
so the reconciler can publish it again if it was lost on the way.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.exceptions import Retry

from orchestrator.engine.canvas import CTX_KEY, record_id
from orchestrator.engine.services import Services
from orchestrator.records import RunFinal
from orchestrator.status import RunStatus

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


REASONS: dict[type[BaseException], str] = {
    BadArguments: "bad_arguments",
    UnencodableResult: "unencodable_result",
    MissingResult: "missing_result",
}


def unplannable(rt: Services, ctx: dict[str, Any], exc: Exception) -> None:
    """A step whose run cannot be planned here (e.g. its spec names a task this worker lacks)
    fails its run, rather than leaving it pending for the reconciler to retry forever."""
    error = f"the worker could not prepare step {ctx.get('step_id')!r}: {exc!r}"
    log.error("run %s: %s", ctx.get("run_id"), error)
    rt.state.fail(ctx["run_id"], ctx.get("step_id"), error)
    rt.writer.submit(
        RunFinal(ctx["run_id"], RunStatus.FAILED, now(), error=error, error_step=ctx.get("step_id"))
    )


def fail_run(rt: Services, run_id: str, step_id: str, error: str) -> None:
    """Fail the run at ``step_id``: nothing new starts; its steps not started are skipped."""
    rt.state.fail(run_id, step_id, error)
    rt.writer.submit(RunFinal(run_id, RunStatus.FAILED, now(), error=error, error_step=step_id))


def schedule_retry(
    rt: Services, task: Task, request: Any, ctx: dict[str, Any], delay: float, exc: BaseException
) -> None:
    """Publish the next attempt to run after ``delay`` seconds; raises Celery's ``Retry``.

    The message is noted in Redis first (``RunState.expect_retry``): if the publish fails, or
    the process that holds it dies, the reconciler publishes it again. Short delays are a
    broker countdown; longer ones (a broker would deliver them twice) wait in Redis's sorted set.
    """
    attempt = int(ctx.get("attempt", 1)) + 1
    kwargs = {**(request.kwargs or {}), CTX_KEY: {**ctx, "attempt": attempt}}
    sig = task.signature_from_request(request, request.args, kwargs, retries=request.retries + 1)
    due = time.time() + delay
    step_id = record_id(ctx)  # an item's attempts are its own, not its for_each step's
    rt.state.expect_retry(ctx["run_id"], step_id, attempt, dict(sig), due)
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
            step_id,
            publish_error,
        )
    raise Retry(exc=exc, when=datetime.fromtimestamp(due, UTC))
