"""The engine's unit tests drive: an app on in-memory twins whose clocks the test holds, and
a worker that executes messages when the test says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from celery.worker.request import Request

from orchestrator.client import run_workflow
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.services import services_of
from orchestrator.records import StepRecord
from orchestrator.settings import Settings
from orchestrator.stores.memory.breakers import MemoryBreakerStore
from orchestrator.stores.memory.delays import MemoryDelays
from orchestrator.stores.memory.history import MemoryHistory
from orchestrator.stores.memory.runs import MemoryRunState
from orchestrator.testing.inline import InlineWorker, SkippingClock, inline_app, memory_adapters
from tests.unit.engine.steps import CALLS

SETTINGS = Settings(task_modules=[], workflows_path=str(Path(__file__).parent / "no-workflows"))


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Engine:
    """The app, its services and twins; messages are executed when the test says so."""

    def __init__(self) -> None:
        self.clock = SkippingClock()
        self.state_clock = ManualClock()
        self.history_ahead = timedelta()
        self.history = MemoryHistory(lambda: datetime.now(UTC) + self.history_ahead)
        self.state = MemoryRunState(self.state_clock)
        self.breakers = MemoryBreakerStore(self.clock)
        self.delays = MemoryDelays()
        adapters = memory_adapters(self.history, self.state, self.breakers, self.delays)
        self.app = inline_app(SETTINGS, adapters)
        self.rt = services_of(self.app)
        self.worker = InlineWorker(self.app, self.clock)

    def start(self, workflow: Any, inputs: dict[str, Any]) -> RunHandle:
        return run_workflow(workflow, inputs, app=self.app)

    def take(self) -> dict[str, Request]:
        """The messages due now, by step id (taken: the test executes them)."""
        return {step_of(r): r for r in self.worker.take()}

    def finish(self, run: RunHandle) -> None:
        """Execute everything that follows, until the run ends."""
        self.worker.run(lambda: run.status().terminal, timeout=10)

    def steps(self, run: RunHandle) -> dict[str, StepRecord]:
        return {s.step_id: s for s in run.steps()}

    def close(self) -> None:
        self.worker.purge()
        self.rt.leases.close()
        self.rt.close()


def step_of(request: Request) -> str:
    return str(request.kwargs["orchestrator"]["step_id"])


def calls(run: RunHandle) -> list[tuple[str, int]]:
    """The steps of ``run`` whose function was called, with the attempt, in order."""
    return [(step, attempt) for run_id, step, attempt in CALLS if run_id == run.id]
