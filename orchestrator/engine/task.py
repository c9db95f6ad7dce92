"""``StepTask``: the base class of every ``@task``.

Called without the ``orchestrator`` keyword argument, a task is a plain Celery task (still
guarded by its circuit breaker); called as a step, it runs :class:`~orchestrator.engine.step.Step`.
Its requests are :class:`~orchestrator.engine.request.StepRequest`, which handle a hard time limit.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from orchestrator.core.backoff import RetryPolicy
from orchestrator.core.breaker import BreakerConfig
from orchestrator.engine.calling import guarded
from orchestrator.engine.canvas import CTX_KEY
from orchestrator.engine.failure import unplannable
from orchestrator.engine.request import StepRequest
from orchestrator.engine.services import services_of
from orchestrator.engine.step import Step
from orchestrator.errors import CircuitOpenError, ServiceUnavailable


class StepTask(Task):  # type: ignore[misc]
    """Base class of ``@task`` tasks: a plain task, or a workflow step when given a context."""

    retry_policy: RetryPolicy | None = None
    breaker: BreakerConfig | None = None
    max_retries = None  # attempts are counted by the framework (field notes: the 4th retry)
    typing = False  # the step context kwarg is not in the function's signature; specs are checked
    Request = StepRequest

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = kwargs.pop(CTX_KEY, None)
        if ctx is None:
            return self._plain(args, kwargs)
        try:
            step = Step(self, ctx)
        except ServiceUnavailable as exc:
            # PostgreSQL is away and this process has not seen the run's plan yet: try again
            # soon; this is not an attempt of the step
            raise self.retry(countdown=2.0, max_retries=None, exc=exc) from exc
        except Exception as exc:
            unplannable(services_of(self.app), ctx, exc)
            raise
        return step.execute(args, kwargs)

    def _plain(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.breaker is None:
            return self.run(*args, **kwargs)
        store = services_of(self.app).breakers
        decision, wait = store.acquire(self.breaker)
        if decision == "defer":
            raise CircuitOpenError(self.breaker.name, wait)
        return guarded(store, self.breaker, decision == "trial", lambda: self.run(*args, **kwargs))
