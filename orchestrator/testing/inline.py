"""``run_inline``: run a workflow in this process, with no Redis, PostgreSQL or worker.

::

    from orchestrator.testing import run_inline

    run = run_inline("etl", {"source": "s3://bucket/day"})
    assert run.status() == "succeeded"
    assert run.wait() == "loaded 193 of 200 rows into facts; ids unique: True"
    [load] = [s for s in run.steps() if s.step_id == "load"]
    assert [a.status for a in load.attempt_log] == ["succeeded"]

The app is built by ``create_app`` as any other, with the in-memory twins of every store
(``orchestrator.stores.memory``), Celery's in-memory broker and result backend. The run is
submitted as ``run_workflow`` submits it (the same validation errors), and the canvas it
publishes is executed here, message by message, by Celery's own request and tracer, as a worker
with the solo pool executes it: the same step state machine, chains, chords and retries.
What would wait (a retry's delay, a step deferred by an open circuit breaker, a countdown) does
not: once nothing else is ready, the harness's clock moves to the time the next message is due.
The returned :class:`~orchestrator.engine.handle.RunHandle` reads the finished run's status,
output, steps and attempts.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from celery import Celery
from celery.worker.request import Request
from kombu.utils.imports import symbol_by_name

from orchestrator.app import create_app
from orchestrator.client import run_workflow
from orchestrator.engine.handle import RunHandle
from orchestrator.engine.services import Adapters, services_of
from orchestrator.settings import Settings, get_settings
from orchestrator.stores.memory.breakers import MemoryBreakerStore
from orchestrator.stores.memory.context import MemoryRunContext
from orchestrator.stores.memory.delays import MemoryDelays
from orchestrator.stores.memory.history import MemoryHistory
from orchestrator.stores.memory.queue_timeouts import MemoryQueueTimeouts
from orchestrator.stores.memory.rate_limits import MemoryRateLimits
from orchestrator.stores.memory.runs import MemoryRunState
from orchestrator.stores.memory.slots import MemorySlots
from orchestrator.stores.memory.waits import MemoryWaits
from orchestrator.stores.memory.workers import MemoryWorkers
from orchestrator.stores.memory.writer import MemoryWriter

HOSTNAME = f"inline@{socket.gethostname()}"
# Celery's in-memory broker keeps its queues per process: one call at a time uses them
_turns = threading.Lock()


class SkippingClock:
    """Wall-clock time, moved ahead whenever the harness skips a wait."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead

    def move_to(self, when: float) -> None:
        self.ahead = max(self.ahead, when - time.time())


def memory_adapters(
    history: MemoryHistory | None = None,
    state: MemoryRunState | None = None,
    breakers: MemoryBreakerStore | None = None,
    delays: MemoryDelays | None = None,
    rate_limits: MemoryRateLimits | None = None,
) -> Adapters:
    """The in-memory twins of every port: those given (a test keeps them, with its clocks), and
    fresh ones for the others (rate limits on the breakers' clock)."""
    history, state = history or MemoryHistory(), state or MemoryRunState()
    made_breakers, made_delays = breakers or MemoryBreakerStore(), delays or MemoryDelays()
    made_rate_limits = rate_limits or MemoryRateLimits(made_breakers.clock)
    contexts, workers = MemoryRunContext(), MemoryWorkers()
    slots = MemorySlots()
    return Adapters(
        history=lambda: history,
        state=lambda: state,
        breakers=lambda _: made_breakers,
        delays=lambda _: made_delays,
        rate_limits=lambda _: made_rate_limits,
        slots=lambda _: slots,
        contexts=lambda _: contexts,
        workers=lambda _: workers,
        waits=lambda h: MemoryWaits(cast(MemoryHistory, h)),
        queue_timeouts=lambda _: MemoryQueueTimeouts(),
        writer=lambda _, announce: MemoryWriter(history, on_finalized=announce),
    )


def inline_app(settings: Settings, adapters: Adapters) -> Celery:
    """An app on ``adapters``, Celery's in-memory broker and in-memory result backend (whose
    chords count their parts as Redis's do, with no ``chord_unlock`` polling)."""
    return create_app(
        settings,
        "orchestrator-inline",
        adapters=adapters,
        broker_url="memory://localhost/",
        result_backend="cache+memory://",
        task_send_sent_event=False,
        worker_send_task_events=False,
    )


def run_inline(
    workflow: Any,
    inputs: dict[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    timeout: float = 30.0,
) -> RunHandle:
    """Run ``workflow`` (a ``Workflow``, spec or registered name) in this process until it ends;
    its handle. ``TimeoutError`` if steps are still being executed after ``timeout`` seconds.

    A run that can go no further without outside help (paused, say) is returned as it stands.
    """
    clock = SkippingClock()
    with _turns:
        adapters = memory_adapters(breakers=MemoryBreakerStore(clock))
        app = inline_app(settings or get_settings(), adapters)
        services = services_of(app)
        worker = InlineWorker(app, clock)
        try:
            run = run_workflow(workflow, inputs, app=app)
            worker.run(lambda: run.status().terminal, timeout)
        finally:
            worker.purge()
            services.leases.close()
            services.close()
    return run


class InlineWorker:
    """Executes an app's messages in this thread, one at a time, as a solo-pool worker does.

    Messages are taken from the in-memory broker's queues in order. One due later (a countdown,
    an ETA) waits in a heap on the harness's clock, which moves to its due time once nothing else
    is ready; a message of the delay store is published at once, with what is left of its delay
    as a countdown.
    """

    def __init__(self, app: Celery, clock: SkippingClock) -> None:
        self.app = app
        self.clock = clock
        self.delays = cast(MemoryDelays, services_of(app).delays)
        self._ready: deque[Request] = deque()
        self._later: list[tuple[float, int, Request]] = []
        self._order = itertools.count()

    def run(self, finished: Callable[[], bool], timeout: float) -> None:
        """Deliver until ``finished()`` with nothing ready, or until nothing is left at all."""
        deadline = time.monotonic() + timeout
        while not (finished() and not self.ready()):
            if self.deliver() is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"steps were still being executed after {timeout}s")

    def deliver(self) -> Request | None:
        """Execute the next message (the clock moves to it if it is due later); None if there is
        none."""
        if self.ready():
            request = self._ready.popleft()
        elif self._later:
            due, _, request = heapq.heappop(self._later)
            self.clock.move_to(due)
        else:
            return None
        request.execute()
        return request

    def ready(self) -> list[Request]:
        """The messages due now, in order (what was published since is collected first)."""
        for signature, wait in self._delayed():
            self.app.signature(signature).apply_async(countdown=wait)
        with self.app.connection_for_read() as conn:
            for name in list(self.app.amqp.queues):
                while message := conn.default_channel.basic_get(queue=name, no_ack=True):
                    self._schedule(self._request(message))
        while self._later and self._later[0][0] <= self.clock():
            self._ready.append(heapq.heappop(self._later)[2])
        return list(self._ready)

    def take(self) -> list[Request]:
        """Remove the messages due now and hand them back unexecuted (a test executes them in
        its own order, or twice, as a redelivery)."""
        taken = self.ready()
        self._ready.clear()
        return taken

    def _delayed(self) -> list[tuple[dict[str, Any], float]]:
        found = []
        while (due := self.delays.next_due()) is not None:
            found += [(s, max(0.0, due - time.time())) for s in self.delays.take_due(due)]
        return found

    def _request(self, message: Any) -> Request:
        task = self.app.tasks[message.headers["task"]]
        request_class = symbol_by_name(task.Request)
        request: Request = request_class(message, app=self.app, task=task, hostname=HOSTNAME)
        return request

    def _schedule(self, request: Request) -> None:
        wait = 0.0 if request.eta is None else request.eta.timestamp() - time.time()
        if wait <= 0:
            self._ready.append(request)
        else:
            heapq.heappush(self._later, (self.clock() + wait, next(self._order), request))

    def purge(self) -> None:
        """Drop what is left (e.g. the deadline check of a run that ended): the broker's queues
        are shared by every app of this process that uses it."""
        self._ready.clear()
        self._later.clear()
        with self.app.connection_for_write() as conn:
            for name in list(self.app.amqp.queues):
                conn.default_channel.queue_purge(name)
