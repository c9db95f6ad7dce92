"""A step's request in the worker's main process: a step killed at its hard time limit.

Celery handles a hard time limit in the main process, after the pool process was killed (first
as a failure, then as a timeout): it would record a failure, failing a chord the step belongs
to, even when the step has attempts left. :class:`StepRequest` instead records the attempt and
publishes the next one, or fails the step for good as Celery would have it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

from celery import Task
from celery.exceptions import Retry, TimeLimitExceeded
from celery.worker.request import Request
from celery.worker.state import task_ready

from orchestrator.engine.canvas import CTX_KEY, record_id
from orchestrator.engine.services import services_of
from orchestrator.engine.step import Step

log = logging.getLogger("orchestrator.step")


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


def hard_timeout(task: Task, ctx: dict[str, Any], request: Request, timeout: float) -> bool:
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
        if services_of(task.app).state.stored(ctx["run_id"], [record_id(ctx)]):
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
