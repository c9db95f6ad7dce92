"""Batched, ordered history writes from a worker process, off the step's hot path.

A step hands events to :meth:`HistoryWriter.submit` (a queue put); one thread per process drains
the queue and writes each batch in one transaction (:mod:`.batch`: events of one step and
attempt merged, every status change a conditional update). :meth:`close` (called on normal
worker shutdown) writes everything that is still queued.

Failures never stop the thread:

- PostgreSQL unreachable (connection lost, pool exhausted): the batch is kept and retried with
  backoff, as long as it takes.
- A batch PostgreSQL refuses, or that cannot be encoded: it is halved until the bad event stands
  alone (:func:`isolate`); every other event is written, the bad one is logged (run, step,
  attempt, reason) and recorded as a ``history_error`` run event in a transaction of its own.

Back-pressure: the queue holds at most ``queue_size`` events (``ORCHESTRATOR_HISTORY_QUEUE_SIZE``).
When it is full, :meth:`HistoryWriter.submit` blocks until the thread has taken a batch: the
step's process stops taking work while PostgreSQL is away, rather than grow its memory or drop
events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator.codec import text_for_postgres
from orchestrator.records import ContextEvent, Ended, Event, RunFinal, SkipSteps, StepEvent
from orchestrator.stores.postgres.batch import write_batch
from orchestrator.stores.postgres.connection import Database

log = logging.getLogger("orchestrator.history")
T = TypeVar("T")
R = TypeVar("R")

_HISTORY_ERROR = text("""
INSERT INTO run_events (run_id, kind, detail)
VALUES (CAST(:run_id AS UUID), 'history_error', :detail)
""")


def isolate(
    items: Sequence[T], apply: Callable[[Sequence[T]], R]
) -> tuple[list[R], list[tuple[T, Exception]]]:
    """Apply ``items`` in order, in as few calls as possible: a call that raises is halved until
    each item it refuses stands alone. Returns what the successful calls returned, and each
    refused item with its error (a single bad item among n costs about 2·log2(n) calls)."""
    try:
        return [apply(items)], []
    except Exception as exc:
        if len(items) <= 1:
            return [], [(item, exc) for item in items]
    middle = len(items) // 2
    done, refused = isolate(items[:middle], apply)
    more, also_refused = isolate(items[middle:], apply)
    return done + more, refused + also_refused


def describe(event: Event) -> str:
    """Which run, step and attempt an event is about (for logs and ``history_error`` events)."""
    if isinstance(event, StepEvent):
        return f"run {event.run_id} step {event.step_id} attempt {event.attempt} ({event.status})"
    if isinstance(event, SkipSteps):
        return f"run {event.run_id} steps {', '.join(event.steps)} ({event.status})"
    if isinstance(event, RunFinal):
        return f"run {event.run_id} end ({event.status})"
    if isinstance(event, ContextEvent):
        return f"run {event.run_id} context (version {event.version})"
    return f"dead letter of {event.task} (run {event.run_id}, step {event.step_id})"


class HistoryWriter:
    """One background thread per process that writes history events in batches."""

    def __init__(
        self,
        store: Database,
        *,
        flush_interval: float = 0.05,
        batch_size: int = 1000,
        queue_size: int = 10_000,
        on_finalized: Callable[[list[Ended]], None] | None = None,
    ) -> None:
        """``queue_size``: most events held before :meth:`submit` blocks (the composition root
        passes the ``history_queue_size`` setting)."""
        self.store = store
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.on_finalized = on_finalized
        self._queue: queue.Queue[Event | None] = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._urgent = threading.Event()  # write without waiting out the window

    def submit(self, event: Event) -> None:
        """Queue an event; blocks while the queue is full (back-pressure). The writer thread
        starts on first use in each process."""
        with self._lock:
            self._ensure_thread()
            self._pending += 1
            events = self._queue
        events.put(event)
        if isinstance(event, RunFinal) or events.qsize() >= self.batch_size:
            self._urgent.set()  # a run ended (its end is awaited), or a batch is full

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's queue and thread aren't ours
            self._pid = os.getpid()
            self._queue = queue.Queue(self.queue_size)
            self._urgent = threading.Event()  # the parent's may have been locked at the fork
            self._pending = 0
            self._thread = None
        if self._thread is None or not self._thread.is_alive():  # closed: what is queued stays
            self._thread = threading.Thread(
                target=self._loop, name="orchestrator-history", daemon=True
            )
            self._thread.start()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event is written; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        self._urgent.set()
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._idle.wait(left):
                    return not self._pending
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread (normal worker shutdown).

        Returns within ``timeout`` also when the queue is full and PostgreSQL is away (the thread
        then goes on retrying)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            # after the queued events: it ends the batch being collected, which is written
            self._queue.put(None, timeout=timeout)
        self._urgent.set()
        thread.join(max(0.0, deadline - time.monotonic()))
        if self._pending:
            log.error("history writer closed with %d events unwritten", self._pending)
        if not thread.is_alive():
            self._thread = None

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch: list[Event] = [first]
            stop = self._fill(batch, time.monotonic() + self.flush_interval)
            self._write(batch)
            if stop:
                return

    def _fill(self, batch: list[Event], deadline: float) -> bool:
        """Wait out the window (or until a run ends, a batch is full, or a flush or close is
        asked for), then take what is queued. The thread wakes once per batch, not once per
        event: a wake-up takes the GIL from the step that submitted the event."""
        self._urgent.wait(max(0.0, deadline - time.monotonic()))
        self._urgent.clear()
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        self._urgent.set()  # more is queued: the next batch does not wait
        return False

    def _write(self, batch: list[Event]) -> None:
        """Write a batch, isolating what is refused; its events count as done whatever happens."""
        try:
            done, refused = isolate(batch, self._commit)
            for event, exc in refused:
                self._record_refused(event, exc)
            self._announce([run for runs in done for run in runs])
        except Exception:  # a bug of ours must not stop the history of the whole process
            log.exception("history batch of %d events failed", len(batch))
        finally:
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _commit(self, events: Sequence[Event]) -> list[Ended]:
        """Write ``events`` in one transaction, retrying while PostgreSQL cannot be reached;
        raises what PostgreSQL or the encoder refuses. Returns the runs it finalized."""
        delay = 0.1
        while True:
            try:
                with self.store.engine.begin() as conn:
                    return write_batch(conn, list(events))
            except (DBAPIError, PoolTimeout) as exc:
                if not _transient(exc):
                    raise
                log.warning("history write failed (%s); retrying in %.1fs", _reason(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _record_refused(self, event: Event, exc: Exception) -> None:
        """Log an event that cannot be written and note it on its run, in its own transaction."""
        what = f"{describe(event)}: {_reason(exc)}"
        log.error("history event not written: %s", what, exc_info=exc)
        if event.run_id is None:
            return
        try:
            with self.store.engine.begin() as conn:
                conn.execute(
                    _HISTORY_ERROR, {"run_id": event.run_id, "detail": text_for_postgres(what)}
                )
        except Exception as failure:
            log.error("history error of run %s not recorded: %s", event.run_id, _reason(failure))

    def _announce(self, finalized: list[Ended]) -> None:
        if finalized and self.on_finalized:
            try:
                self.on_finalized(finalized)
            except Exception:
                log.exception("run-finalized notification failed")


def _transient(exc: Exception) -> bool:
    """Connection trouble or a busy pool (retry), as opposed to what PostgreSQL refuses."""
    if isinstance(exc, PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and (
        bool(exc.connection_invalidated) or isinstance(exc, OperationalError)
    )


def _reason(exc: BaseException) -> str:
    """An error on one line, without SQLAlchemy's statement and parameters."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    said = " ".join(line.strip() for line in str(cause).splitlines() if line.strip())
    return f"{type(cause).__name__}: {said}"[:500]
