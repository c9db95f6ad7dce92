"""Runs whose end this process heard of from their worker before history had written it.

The worker that ends a run that succeeded announces it at once with its output
(``engine.finish``), and ``RunHandle.wait()`` returns on that; history's transaction follows a
few milliseconds later. So that what this process reads next agrees with what ``wait()``
returned, a read of such a run (``RunHandle.record()``, ``steps()``, ``get_run``,
``list_runs``) first waits until history has the end too: at most :data:`SETTLE_WAIT`, on
history's own announcement, never in a tight loop. Other processes read history as it is.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from orchestrator.ports import RunHistory, RunStateStore

SETTLE_WAIT = 5.0
"""Longest a read waits for history to have an end its worker announced already."""
KEPT = 1024
"""Most runs noted at once (the oldest are forgotten first)."""


class EndsAhead:
    """The runs of this process whose end history may not have yet, each with a deadline."""

    def __init__(
        self, state: Callable[[], RunStateStore], history: Callable[[], RunHistory]
    ) -> None:
        self._state = state
        self._history = history
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, float] = OrderedDict()

    def note(self, run_id: str) -> None:
        """``wait()`` returned on the worker's announcement of the run's end."""
        now = time.monotonic()
        with self._lock:
            self._runs[run_id] = now + SETTLE_WAIT
            self._runs.move_to_end(run_id)  # oldest first: the first deadline passes first
            while self._runs and (len(self._runs) > KEPT or next(iter(self._runs.values())) <= now):
                self._runs.popitem(last=False)

    def settle(self, run_ids: Iterable[str] | None = None) -> None:
        """Wait until history has the end of each of ``run_ids`` that is noted (of every noted
        run when None); each is then forgotten."""
        with self._lock:
            if not self._runs:
                return
            wanted = list(self._runs) if run_ids is None else run_ids
            pending = [(r, self._runs[r]) for r in wanted if r in self._runs]
        for run_id, deadline in pending:
            self._await(run_id, deadline)
            with self._lock:
                self._runs.pop(run_id, None)

    def _await(self, run_id: str, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for notice in self._state().watch_done(run_id, left, tick=left):
            if notice is None or notice.output is None:  # at first, then history's
                found = self._history().get_run(run_id)
                if found is None or found.status.terminal:
                    return
