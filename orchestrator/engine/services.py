"""The services of one app: what the engine and ops reach through a Celery app.

``orchestrator.app.create_app(settings)`` builds them with the Redis and PostgreSQL adapters and
binds them to the Celery app it returns; ``orchestrator.testing`` binds the in-memory twins. A
step task reaches them through its own app (``services_of(self.app)``), a test passes its own:
nothing is looked up in a process-global.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Generic, TypeVar

from celery import Celery

from orchestrator.core import registry
from orchestrator.core.planner import Plan, build_plan
from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.ends_ahead import EndsAhead
from orchestrator.engine.hooks import on_run_ended
from orchestrator.engine.leases import LeaseKeeper
from orchestrator.errors import OrchestratorError
from orchestrator.ports import (
    BreakerStore,
    DelayStore,
    HistorySink,
    QueueTimeoutStore,
    RateLimitStore,
    RunContextStore,
    RunHistory,
    RunStateStore,
    SlotStore,
    WaitStore,
    WorkerStore,
)
from orchestrator.records import Ended
from orchestrator.settings import Settings

log = logging.getLogger("orchestrator")
T = TypeVar("T")
ATTRIBUTE = "orchestrator_services"
PLANS_KEPT = 256


@dataclass(frozen=True)
class PlanKey:
    """Which plan a message belongs to: the spec version, and for a retried or recovered run,
    the run and recovery epoch whose done steps the plan skips."""

    version: str
    run_id: str | None = None
    epoch: int = 0


class Lazy(Generic[T]):
    """One instance per process, made on first use and forgotten in a forked child."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
                value = self._value
        return value

    def made(self) -> T | None:
        return self._value

    def forget(self) -> None:
        self._value = None
        self._lock = threading.Lock()


@dataclass(frozen=True)
class Adapters:
    """How to make each port's adapter (the composition root chooses them)."""

    history: Callable[[], RunHistory]
    state: Callable[[], RunStateStore]
    breakers: Callable[[RunStateStore], BreakerStore]
    delays: Callable[[RunStateStore], DelayStore]
    writer: Callable[[RunHistory, Callable[[list[Ended]], None]], HistorySink]
    queue_timeouts: Callable[[RunStateStore], QueueTimeoutStore]
    rate_limits: Callable[[RunStateStore], RateLimitStore]
    slots: Callable[[RunStateStore], SlotStore]
    waits: Callable[[RunHistory], WaitStore]
    contexts: Callable[[RunStateStore], RunContextStore]
    workers: Callable[[RunStateStore], WorkerStore]


class Services:
    """Settings, the Celery app, the ports' adapters, the loaded workflows and the plan cache."""

    def __init__(self, settings: Settings, app: Celery, adapters: Adapters) -> None:
        self.settings = settings
        self.app = app
        self._history = Lazy(adapters.history)
        self._state = Lazy(adapters.state)
        self._breakers = Lazy(lambda: adapters.breakers(self.state))
        self._delays = Lazy(lambda: adapters.delays(self.state))
        self._rate_limits = Lazy(lambda: adapters.rate_limits(self.state))
        self._slots = Lazy(lambda: adapters.slots(self.state))
        self._waits = Lazy(lambda: adapters.waits(self.history))
        self._queue_timeouts = Lazy(lambda: adapters.queue_timeouts(self.state))
        self._contexts = Lazy(lambda: adapters.contexts(self.state))
        self._workers = Lazy(lambda: adapters.workers(self.state))
        self._writer = Lazy(lambda: adapters.writer(self.history, self._announce))
        self._leases = Lazy(lambda: LeaseKeeper(lambda: self.state, settings.lease_seconds))
        self.ends_ahead = EndsAhead(lambda: self.state, lambda: self.history)
        self._plans: OrderedDict[PlanKey, tuple[WorkflowSpec, Plan]] = OrderedDict()
        self._lock = threading.Lock()
        self._modules_loaded = False

    @property
    def history(self) -> RunHistory:
        return self._history.get()

    @property
    def state(self) -> RunStateStore:
        return self._state.get()

    @property
    def breakers(self) -> BreakerStore:
        return self._breakers.get()

    @property
    def delays(self) -> DelayStore:
        return self._delays.get()

    @property
    def rate_limits(self) -> RateLimitStore:
        return self._rate_limits.get()

    @property
    def slots(self) -> SlotStore:
        """Workflow concurrency slots shared by every process (``engine.concurrency``)."""
        return self._slots.get()

    @property
    def waits(self) -> WaitStore:
        """Sleeping and waiting steps, and the signals sent to runs (PostgreSQL)."""
        return self._waits.get()

    @property
    def queue_timeouts(self) -> QueueTimeoutStore:
        """Step messages waiting under a ``queue_timeout`` (``engine.queue_timeouts``)."""
        return self._queue_timeouts.get()

    @property
    def contexts(self) -> RunContextStore:
        """Each run's context while it runs (``current_run.context``, ``run.context()``)."""
        return self._contexts.get()

    @property
    def workers(self) -> WorkerStore:
        """The registry of workers and their heartbeats (``orchestrator.ops.workers``)."""
        return self._workers.get()

    @property
    def writer(self) -> HistorySink:
        return self._writer.get()

    @property
    def leases(self) -> LeaseKeeper:
        """The leases of the steps running in this process, renewed by a thread."""
        return self._leases.get()

    @cached_property
    def catalog(self) -> CeleryCatalog:
        return CeleryCatalog(self.app)

    @property
    def longest_broker_delay(self) -> float:
        """Longer delays are kept in Redis: a broker ETA past the visibility timeout runs twice."""
        return self.settings.visibility_timeout / 2

    def _announce(self, finalized: list[Ended]) -> None:
        for run_id, status in finalized:
            self.state.notify_done(run_id, status)
            on_run_ended(self, run_id, status)
            self.state.end(run_id, status)

    def after_fork(self, **_: Any) -> None:
        """In a new pool process: forget the parent's clients, writer and locks.

        The parent's threads (reconciler, delay pump, history writer) may have held a lock of
        its clients or caches at the moment of the fork; a child that used them could wait
        forever.
        """
        for lazy in (
            self._history,
            self._state,
            self._breakers,
            self._waits,
            self._delays,
            self._rate_limits,
            self._slots,
            self._queue_timeouts,
            self._contexts,
            self._workers,
            self._writer,
            self._leases,
        ):
            lazy.forget()
        self._lock = threading.Lock()

    def close(self, **_: Any) -> None:
        """Write every queued history event (a worker process or a test ends)."""
        writer = self._writer.made()
        if writer is not None:
            writer.close()

    def load_modules(self) -> None:
        """Import the task modules and the YAML workflows once per process."""
        if self._modules_loaded:
            return
        self.import_tasks()
        registry.ensure_loaded(self.settings.workflows_path)
        self._modules_loaded = True

    def import_tasks(self) -> None:
        """Import the task modules (``ORCHESTRATOR_TASK_MODULES``): their tasks register."""
        for name in self.settings.task_modules:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name or self.settings.task_modules != ["tasks"]:
                    raise
                log.debug("default task module %r not found", name)

    def remember(self, key: PlanKey, spec: WorkflowSpec, plan: Plan) -> None:
        """Keep a plan: the ``PLANS_KEPT`` used last are kept (an LRU)."""
        with self._lock:
            self._plans[key] = (spec, plan)
            self._plans.move_to_end(key)
            while len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)

    def _cached(self, key: PlanKey) -> tuple[WorkflowSpec, Plan] | None:
        with self._lock:
            found = self._plans.get(key)
            if found is not None:
                self._plans.move_to_end(key)
            return found

    def start_plan(self, spec: WorkflowSpec) -> Plan:
        """The plan of a run of ``spec`` from its start (nothing done): built once per process
        and spec version, the first time it is submitted or run."""
        found = self._cached(PlanKey(spec.version))
        if found is not None:
            return found[1]
        plan = build_plan(spec, frozenset())
        self.remember(PlanKey(spec.version), spec, plan)
        return plan

    def plan(self, key: PlanKey) -> tuple[WorkflowSpec, Plan]:
        """The spec and plan of a run, from cache or rebuilt from the stored spec."""
        found = self._cached(key)
        if found is not None:
            return found
        data = self.history.load_spec(key.version)
        if data is None:
            raise LookupError(f"workflow version {key.version} is not in workflow_specs")
        spec = WorkflowSpec.model_validate(data)
        done: frozenset[str] = frozenset()
        if key.run_id is not None:
            run = self.history.get_run(key.run_id)
            if run is not None:
                done = frozenset(run.recoveries[key.epoch - 1] if key.epoch else run.done_steps)
        plan = build_plan(spec, done)
        self.remember(key, spec, plan)
        return spec, plan


def bind(app: Celery, services: Services) -> None:
    """Make ``services`` the services of ``app`` (the composition root does this once)."""
    setattr(app, ATTRIBUTE, services)


def services_of(app: Celery) -> Services:
    """The services bound to ``app``; a clear error for an app ``create_app`` did not build."""
    found = getattr(app, ATTRIBUTE, None)
    if not isinstance(found, Services):
        raise OrchestratorError(
            f"the Celery app {app.main!r} has no orchestrator services: build it with "
            "orchestrator.create_app(settings), or run steps on orchestrator.worker's app"
        )
    return found


class CeleryCatalog:
    """Looks tasks up in a Celery app's registry (``spec.TaskCatalog``)."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def task_names(self) -> list[str]:
        return sorted(self.app.tasks.keys())

    def signature_of(self, name: str) -> inspect.Signature | None:
        found = self.app.tasks.get(name)
        if found is None:
            return None
        func = getattr(found, "__wrapped__", None) or found.run
        try:
            return inspect.signature(func)
        except (TypeError, ValueError):
            return inspect.Signature(
                [
                    inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
                    inspect.Parameter("kw", inspect.Parameter.VAR_KEYWORD),
                ]
            )
