"""The per-process services: settings, Celery app, history store and writer, Redis run state,
loaded task modules and workflows, and the cache of plans."""

from __future__ import annotations

import importlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

from celery import Celery

from orchestrator.app import CeleryCatalog, get_app
from orchestrator.core import registry
from orchestrator.core.planner import Plan, build_plan
from orchestrator.core.spec import WorkflowSpec
from orchestrator.settings import Settings, get_settings
from orchestrator.stores.postgres.store import HistoryStore
from orchestrator.stores.postgres.writer import HistoryWriter
from orchestrator.stores.redis.breakers import RedisBreakerStore
from orchestrator.stores.redis.delays import DelayedMessages
from orchestrator.stores.redis.runs import RunState

log = logging.getLogger("orchestrator")


@dataclass(frozen=True)
class PlanKey:
    """Which plan a message belongs to: the spec version, and for a retried or recovered run,
    the run and recovery epoch whose done steps the plan skips."""

    version: str
    run_id: str | None = None
    epoch: int = 0


class Runtime:
    """Everything a client or worker process shares, created lazily."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._plans: OrderedDict[PlanKey, tuple[WorkflowSpec, Plan]] = OrderedDict()
        self._lock = threading.Lock()
        self._modules_loaded = False

    @cached_property
    def app(self) -> Celery:
        return get_app()

    @cached_property
    def store(self) -> HistoryStore:
        return HistoryStore(self.settings.sqlalchemy_url)

    @cached_property
    def state(self) -> RunState:
        return RunState(
            self.settings.state_url,
            self.settings.result_expires,
            ended_ttl=max(2 * self.settings.visibility_timeout, 3600),
        )

    @cached_property
    def breakers(self) -> RedisBreakerStore:
        return RedisBreakerStore(self.state.client)

    @cached_property
    def delays(self) -> DelayedMessages:
        return DelayedMessages(self.state.client)

    @property
    def longest_broker_delay(self) -> float:
        """Longer delays are kept in Redis: a broker ETA past the visibility timeout runs twice."""
        return self.settings.visibility_timeout / 2

    @cached_property
    def writer(self) -> HistoryWriter:
        return HistoryWriter(
            self.store,
            flush_interval=self.settings.history_flush_interval,
            batch_size=self.settings.history_batch_size,
            on_finalized=self._announce,
        )

    @cached_property
    def catalog(self) -> CeleryCatalog:
        return CeleryCatalog(self.app)

    def _announce(self, finalized: list[tuple[str, str]]) -> None:
        for run_id, status in finalized:
            self.state.notify_done(run_id, status)
            self.state.end(run_id, status)

    def load_modules(self) -> None:
        """Import the task modules and the YAML workflows once per process."""
        if self._modules_loaded:
            return
        importlib.import_module("orchestrator.ops.maintenance")  # the app and its own tasks
        for name in self.settings.task_modules:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name != name or self.settings.task_modules != ["tasks"]:
                    raise
                log.debug("default task module %r not found", name)
        registry.ensure_loaded(self.settings.workflows_path)
        self._modules_loaded = True

    def remember(self, key: PlanKey, spec: WorkflowSpec, plan: Plan) -> None:
        with self._lock:
            self._plans[key] = (spec, plan)
            self._plans.move_to_end(key)
            while len(self._plans) > 256:
                self._plans.popitem(last=False)

    def plan(self, key: PlanKey) -> tuple[WorkflowSpec, Plan]:
        """The spec and plan of a run, from cache or rebuilt from the stored spec."""
        with self._lock:
            found = self._plans.get(key)
        if found is not None:
            return found
        data = self.store.load_spec(key.version)
        if data is None:
            raise LookupError(f"workflow version {key.version} is not in workflow_specs")
        spec = WorkflowSpec.model_validate(data)
        done: frozenset[str] = frozenset()
        if key.run_id is not None:
            run = self.store.get_run(key.run_id)
            if run is not None:
                done = frozenset(run.recoveries[key.epoch - 1] if key.epoch else run.done_steps)
        plan = build_plan(spec, done)
        self.remember(key, spec, plan)
        return spec, plan


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """The process-wide runtime."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime()
        return _runtime


def after_fork() -> None:
    """In a new pool process: forget the parent's runtime.

    The parent's threads (reconciler, delay pump, history writer) may have held a lock of its
    clients or caches at the moment of the fork; a child that used them could wait forever.
    """
    global _runtime, _runtime_lock
    _runtime = None
    _runtime_lock = threading.Lock()


def reset_runtime() -> None:
    """Forget the runtime (tests that change settings); closes its writer."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None and "writer" in _runtime.__dict__:
            _runtime.writer.close()
        _runtime = None
