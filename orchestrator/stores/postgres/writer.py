"""Batched, ordered history writes from a worker process, off the step's hot path.

A step hands events to :meth:`HistoryWriter.submit` (a queue put); one thread per process drains
the queue and writes each batch in one transaction with ``executemany``. Events of one step and
attempt are merged within a batch. Every status change is a conditional update: a terminal row
never moves back. :meth:`close` (called on normal worker shutdown) writes everything that is still
queued.

Values go through one encoder, :mod:`orchestrator.codec` (Celery's JSON, so a ``datetime``,
``Decimal`` or ``UUID`` result is stored and read back as such; NUL characters, which PostgreSQL
refuses, become U+FFFD).

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
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orchestrator import codec
from orchestrator.records import UNSET, DeadLetterEvent, Event, RunFinal, SkipSteps, StepEvent
from orchestrator.stores.postgres.store import HistoryStore

log = logging.getLogger("orchestrator.history")
T = TypeVar("T")
R = TypeVar("R")


# One statement per batch, whatever its size: the rows travel as arrays (unnest), which costs a
# few microseconds a row instead of a round trip each.
_ROWS = """unnest(CAST(:run_id AS UUID[]), CAST(:step_id AS TEXT[]), CAST(:attempt AS INT[]),
              CAST(:status AS TEXT[]), CAST(:worker AS TEXT[]), CAST(:started_at AS TIMESTAMPTZ[]),
              CAST(:finished_at AS TIMESTAMPTZ[]), CAST(:result AS JSONB[]),
              CAST(:error AS TEXT[]), CAST(:traceback AS TEXT[]))
    AS v(run_id, step_id, attempt, status, worker, started_at, finished_at, result, error,
         traceback)"""
_STEP = text(f"""
UPDATE task_runs t SET status = v.status,
    attempts = GREATEST(t.attempts, v.attempt),
    started_at = COALESCE(t.started_at, v.started_at),
    finished_at = COALESCE(v.finished_at, t.finished_at),
    result = COALESCE(v.result, t.result),
    error = CASE WHEN v.status = 'succeeded' THEN NULL ELSE COALESCE(v.error, t.error) END
FROM {_ROWS}
WHERE t.run_id = v.run_id AND t.step_id = v.step_id AND t.attempts <= v.attempt
  AND (t.status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')
       OR (t.status = v.status AND t.finished_at IS NULL)
       OR (t.status = 'skipped' AND v.status IN ('succeeded', 'failed')))
""")
# The last line: a step skipped when its run failed (presumed not started, its events not yet
# written) that did run records its real outcome; it never moves back to running.
_ATTEMPT = text(f"""
INSERT INTO task_attempts (task_run_id, attempt, status, worker, error, traceback,
                           started_at, finished_at)
SELECT t.id, v.attempt, v.status, v.worker, v.error, v.traceback, v.started_at, v.finished_at
FROM {_ROWS} JOIN task_runs t ON t.run_id = v.run_id AND t.step_id = v.step_id
ON CONFLICT (task_run_id, attempt) DO UPDATE SET
    status = CASE WHEN task_attempts.finished_at IS NULL THEN EXCLUDED.status
                  ELSE task_attempts.status END,
    worker = COALESCE(task_attempts.worker, EXCLUDED.worker),
    error = COALESCE(EXCLUDED.error, task_attempts.error),
    traceback = COALESCE(EXCLUDED.traceback, task_attempts.traceback),
    started_at = COALESCE(task_attempts.started_at, EXCLUDED.started_at),
    finished_at = COALESCE(task_attempts.finished_at, EXCLUDED.finished_at)
""")
_RUN_START = text("""
UPDATE workflow_runs SET status = 'running', started_at = :at
WHERE id = CAST(:run_id AS UUID) AND status = 'pending'
""")
_SKIP = text("""
UPDATE task_runs SET status = :status, finished_at = :at, error = COALESCE(error, :reason)
WHERE run_id = CAST(:run_id AS UUID) AND step_id = ANY(:steps)
  AND status IN ('pending', 'retrying')
""")
_FAIL = text("""
UPDATE workflow_runs SET status = 'failed', error = :error, error_step = :error_step,
    finished_at = :at, started_at = COALESCE(started_at, :at)
WHERE id = CAST(:run_id AS UUID) AND status NOT IN ('succeeded', 'failed', 'cancelled')
RETURNING id
""")
_SKIP_UNSTARTED = text("""
UPDATE task_runs t SET status = 'skipped', finished_at = :at, error = COALESCE(t.error, :reason)
FROM workflow_runs r
WHERE r.id = t.run_id AND t.run_id = CAST(:run_id AS UUID) AND r.status = 'failed'
  AND t.status IN ('pending', 'retrying')
""")
_OUTPUT = text("""
UPDATE workflow_runs SET output = CAST(:output AS JSONB), finished_at = :at
WHERE id = CAST(:run_id AS UUID) AND status NOT IN ('succeeded', 'failed', 'cancelled')
""")
_LOCK = text("""
SELECT id FROM workflow_runs WHERE id = ANY(CAST(:runs AS UUID[])) ORDER BY id FOR UPDATE
""")
# A run succeeds once its sinks reported (output and finished_at written) and every step row
# says succeeded, whichever of those writes commits last; both lock the run row first.
_SUCCEED = text("""
UPDATE workflow_runs r SET status = 'succeeded', started_at = COALESCE(started_at, finished_at)
WHERE r.id = ANY(CAST(:runs AS UUID[])) AND r.status IN ('pending', 'running', 'paused')
  AND r.finished_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM task_runs t WHERE t.run_id = r.id AND t.status <> 'succeeded')
RETURNING r.id
""")
_DEAD = text("""
INSERT INTO dead_letters (run_id, step_id, task, celery_task_id, args, kwargs, error, traceback,
                          reason, created_at)
VALUES (CAST(:run_id AS UUID), :step_id, :task, :celery_task_id, CAST(:args AS JSONB),
        CAST(:kwargs AS JSONB), :error, :traceback, :reason, :at)
""")
_HISTORY_ERROR = text("""
INSERT INTO run_events (run_id, kind, detail)
VALUES (CAST(:run_id AS UUID), 'history_error', :detail)
""")
_FINISHED = frozenset({"succeeded", "failed", "retrying"})
_TEXT = codec.text_for_postgres


def _json(value: Any) -> str | None:
    return None if value is UNSET else codec.for_postgres(value)


def _lenient_json(value: Any) -> str:
    """``value`` for a JSONB column; what Celery's JSON cannot encode is kept as its repr
    (a dead letter is kept whatever its arguments)."""
    try:
        return codec.for_postgres(value)
    except codec.UnencodableValue:
        return codec.for_postgres(_printable(value))


def _printable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    try:
        codec.encode(value)
    except codec.UnencodableValue:
        return repr(value)
    return value


def _step_params(event: StepEvent) -> dict[str, Any]:
    finished = event.at if event.status in _FINISHED else None
    return {
        "run_id": event.run_id,
        "step_id": event.step_id,
        "attempt": event.attempt,
        "status": event.status,
        "worker": _TEXT(event.worker),
        "started_at": event.started_at or (event.at if event.status == "running" else None),
        "finished_at": finished,
        "result": _json(event.result),
        "error": _TEXT(event.error),
        "traceback": _TEXT(event.traceback),
    }


def _columns(events: list[StepEvent]) -> dict[str, list[Any]]:
    """The events' parameters as one array per column, for ``unnest``."""
    rows = [_step_params(e) for e in events]
    return {name: [row[name] for row in rows] for name in rows[0]}


def merge_steps(events: list[StepEvent]) -> list[StepEvent]:
    """One event per (run, step, attempt): the latest status, keeping when it started."""
    merged: dict[tuple[str, str, int], StepEvent] = {}
    for event in events:
        key = (event.run_id, event.step_id, event.attempt)
        first = merged.get(key)
        if first is None:
            merged[key] = event
            continue
        started = first.started_at or (first.at if first.status == "running" else None)
        merged[key] = replace(
            event,
            started_at=event.started_at or started,
            worker=event.worker or first.worker,
            starts_run=first.starts_run or event.starts_run,
        )
    return list(merged.values())


@dataclass
class _Batch:
    events: list[Event] = field(default_factory=list)

    def write(self, conn: Connection) -> list[tuple[str, str]]:
        """Apply the batch in one transaction; returns the runs it finalized."""
        steps = merge_steps([e for e in self.events if isinstance(e, StepEvent)])
        finals = [e for e in self.events if isinstance(e, RunFinal)]
        maybe_done = sorted(
            {e.run_id for e in steps if e.status == "succeeded"}
            | {e.run_id for e in finals if e.status == "succeeded"}
        )
        if maybe_done:
            conn.execute(_LOCK, {"runs": maybe_done})
        _write_steps(conn, steps)
        for skip in (e for e in self.events if isinstance(e, SkipSteps)):
            conn.execute(
                _SKIP,
                {
                    "run_id": skip.run_id,
                    "steps": list(skip.steps),
                    "status": skip.status,
                    "at": skip.at,
                    "reason": _TEXT(skip.reason),
                },
            )
        dead = [_dead_params(e) for e in self.events if isinstance(e, DeadLetterEvent)]
        if dead:
            conn.execute(_DEAD, dead)
        ended = [f for f in finals if _finalize(conn, f)]
        done = conn.execute(_SUCCEED, {"runs": maybe_done}).all() if maybe_done else []
        return [(f.run_id, f.status) for f in ended] + [(str(r[0]), "succeeded") for r in done]


def _write_steps(conn: Connection, steps: list[StepEvent]) -> None:
    starts = [{"run_id": e.run_id, "at": e.started_at or e.at} for e in steps if e.starts_run]
    if starts:
        conn.execute(_RUN_START, starts)
    if not steps:
        return
    latest = {(e.run_id, e.step_id): e for e in sorted(steps, key=lambda e: e.attempt)}
    conn.execute(_STEP, _columns(list(latest.values())))
    tried = [e for e in steps if e.status not in ("skipped", "cancelled")]
    if tried:
        conn.execute(_ATTEMPT, _columns(tried))


def _dead_params(event: DeadLetterEvent) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "step_id": event.step_id,
        "task": _TEXT(event.task),
        "celery_task_id": event.celery_task_id,
        "args": _lenient_json(event.args),
        "kwargs": _lenient_json(event.kwargs),
        "error": _TEXT(event.error),
        "traceback": _TEXT(event.traceback),
        "reason": _TEXT(event.reason),
        "at": event.at,
    }


def _finalize(conn: Connection, final: RunFinal) -> bool:
    """Write a run's end; True when it was a failure that this call recorded."""
    if final.status == "succeeded":
        conn.execute(
            _OUTPUT,
            {"run_id": final.run_id, "at": final.at, "output": codec.for_postgres(final.output)},
        )
        return False
    changed = conn.execute(
        _FAIL,
        {
            "run_id": final.run_id,
            "at": final.at,
            "error": _TEXT(final.error),
            "error_step": _TEXT(final.error_step),
        },
    ).first()
    # nothing new starts in a failed run: its dependents and every step not yet started
    conn.execute(
        _SKIP_UNSTARTED,
        {"run_id": final.run_id, "at": final.at, "reason": _TEXT(final.error)},
    )
    return changed is not None


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
    return f"dead letter of {event.task} (run {event.run_id}, step {event.step_id})"


class HistoryWriter:
    """One background thread per process that writes history events in batches."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        flush_interval: float = 0.05,
        batch_size: int = 1000,
        queue_size: int = 10_000,
        on_finalized: Callable[[list[tuple[str, str]]], None] | None = None,
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

    def submit(self, event: Event) -> None:
        """Queue an event; blocks while the queue is full (back-pressure). The writer thread
        starts on first use in each process."""
        with self._lock:
            self._ensure_thread()
            self._pending += 1
            events = self._queue
        events.put(event)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's queue and thread aren't ours
            self._pid = os.getpid()
            self._queue = queue.Queue(self.queue_size)
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
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
            if isinstance(item, RunFinal):
                return False  # a run ended: write now, its waiter is listening
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

    def _commit(self, events: Sequence[Event]) -> list[tuple[str, str]]:
        """Write ``events`` in one transaction, retrying while PostgreSQL cannot be reached;
        raises what PostgreSQL or the encoder refuses. Returns the runs it finalized."""
        delay = 0.1
        while True:
            try:
                with self.store.engine.begin() as conn:
                    return _Batch(list(events)).write(conn)
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
                conn.execute(_HISTORY_ERROR, {"run_id": event.run_id, "detail": _TEXT(what)})
        except Exception as failure:
            log.error("history error of run %s not recorded: %s", event.run_id, _reason(failure))

    def _announce(self, finalized: list[tuple[str, str]]) -> None:
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
