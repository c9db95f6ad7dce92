"""One batch of history events written in one transaction: the statements and their parameters.

Events of one step and attempt are merged (:func:`merge_steps`); rows travel as arrays, so a
batch costs one statement per kind of event, whatever its size. Every status change is a
conditional update: a terminal row never moves back. Values go through one encoder,
:mod:`orchestrator.codec` (Celery's JSON; NUL characters, which PostgreSQL refuses, become
U+FFFD). The thread that collects batches is :mod:`.writer`'s.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from orchestrator import codec
from orchestrator.records import (
    UNSET,
    DeadLetterEvent,
    Ended,
    Event,
    RunFinal,
    SkipSteps,
    StepEvent,
)
from orchestrator.status import ATTEMPT_ENDED, RunStatus, StepStatus
from orchestrator.stores.postgres.context import write_contexts
from orchestrator.stores.postgres.statuses import (
    SQL_RUNS_ENDED,
    SQL_RUNS_UNFINISHED,
    SQL_STEPS_ENDED,
    SQL_STEPS_PRESUMED,
    SQL_STEPS_WAITING,
)

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
  AND (t.status NOT IN {SQL_STEPS_ENDED}
       OR (t.status = v.status AND (t.finished_at IS NULL OR v.status = 'succeeded'))
       OR (t.status IN {SQL_STEPS_PRESUMED} AND v.status IN ('succeeded', 'failed')))
""")
# The third line: a success settled from Redis by the run's end (``_SETTLE``) takes its own
# process's event when that arrives (its real start and end). The last line: a step skipped or
# cancelled when its run ended (presumed not started: its events were not yet written) that
# did run records its real outcome, a late success with its result (the run keeps its status; a
# retry inherits the step); it never moves back to running.
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
_SKIP = text(f"""
UPDATE task_runs SET status = :status, finished_at = :at, error = COALESCE(error, :reason)
WHERE run_id = CAST(:run_id AS UUID) AND step_id = ANY(:steps)
  AND status IN {SQL_STEPS_WAITING}
""")
_FAIL = text(f"""
UPDATE workflow_runs SET status = 'failed', error = :error, error_step = :error_step,
    finished_at = :at, started_at = COALESCE(started_at, :at)
WHERE id = CAST(:run_id AS UUID) AND status NOT IN {SQL_RUNS_ENDED}
RETURNING id
""")
_SKIP_UNSTARTED = text(f"""
UPDATE task_runs t SET status = 'skipped', finished_at = :at, error = COALESCE(t.error, :reason)
FROM workflow_runs r
WHERE r.id = t.run_id AND t.run_id = CAST(:run_id AS UUID) AND r.status = 'failed'
  AND t.status IN {SQL_STEPS_WAITING}
""")
_OUTPUT = text(f"""
UPDATE workflow_runs SET output = CAST(:output AS JSONB), finished_at = :at
WHERE id = CAST(:run_id AS UUID) AND status NOT IN {SQL_RUNS_ENDED}
""")
# A succeeded run's end writes the rows of its steps that other processes' writers have not
# yet written, from the run's state in Redis (``RunFinal.settled``); their own events follow.
_SETTLE = text(f"""
UPDATE task_runs t SET status = CASE WHEN v.skipped THEN 'skipped' ELSE 'succeeded' END,
    attempts = GREATEST(t.attempts, v.attempt),
    result = CASE WHEN v.skipped THEN t.result ELSE v.result END,
    started_at = COALESCE(t.started_at, v.started_at),
    finished_at = COALESCE(t.finished_at, v.finished_at, :at),
    error = CASE WHEN v.skipped THEN t.error END
FROM unnest(CAST(:step_id AS TEXT[]), CAST(:result AS JSONB[]), CAST(:attempt AS INT[]),
            CAST(:skipped AS BOOLEAN[]), CAST(:started_at AS TIMESTAMPTZ[]),
            CAST(:finished_at AS TIMESTAMPTZ[]))
    AS v(step_id, result, attempt, skipped, started_at, finished_at)
WHERE t.run_id = CAST(:run_id AS UUID) AND t.step_id = v.step_id
  AND t.status NOT IN {SQL_STEPS_ENDED}
""")
_LOCK = text("""
SELECT id FROM workflow_runs WHERE id = ANY(CAST(:runs AS UUID[])) ORDER BY id FOR UPDATE
""")
# A run succeeds once its sinks reported (output and finished_at written) and every step row
# says succeeded (or skipped: a false `when`), whichever of those writes commits last; both lock
# the run row first.
_SUCCEED = text(f"""
UPDATE workflow_runs r SET status = 'succeeded', started_at = COALESCE(started_at, finished_at)
WHERE r.id = ANY(CAST(:runs AS UUID[])) AND r.status IN {SQL_RUNS_UNFINISHED}
  AND r.finished_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM task_runs t WHERE t.run_id = r.id
                  AND t.status NOT IN ('succeeded', 'skipped'))
RETURNING r.id
""")
_DEAD = text("""
INSERT INTO dead_letters (run_id, step_id, task, celery_task_id, args, kwargs, error, traceback,
                          reason, created_at)
VALUES (CAST(:run_id AS UUID), :step_id, :task, :celery_task_id, CAST(:args AS JSONB),
        CAST(:kwargs AS JSONB), :error, :traceback, :reason, :at)
""")
_TEXT = codec.text_for_postgres


def write_batch(conn: Connection, events: list[Event]) -> list[Ended]:
    """Apply ``events`` in one transaction; returns the runs whose end it recorded."""
    steps = merge_steps([e for e in events if isinstance(e, StepEvent)])
    finals = [e for e in events if isinstance(e, RunFinal)]
    maybe_done = sorted(
        {e.run_id for e in steps if e.status == StepStatus.SUCCEEDED}
        | {e.run_id for e in finals if e.status == RunStatus.SUCCEEDED}
        | {e.run_id for e in events if isinstance(e, SkipSteps) and e.status == StepStatus.SKIPPED}
    )
    if maybe_done:
        conn.execute(_LOCK, {"runs": maybe_done})
    _write_steps(conn, steps)
    for skip in (e for e in events if isinstance(e, SkipSteps)):
        conn.execute(
            _SKIP,
            {
                "run_id": skip.run_id,
                "steps": list(skip.steps),
                "status": skip.status.value,
                "at": skip.at,
                "reason": _TEXT(skip.reason),
            },
        )
    dead = [_dead_params(e) for e in events if isinstance(e, DeadLetterEvent)]
    if dead:
        conn.execute(_DEAD, dead)
    write_contexts(conn, events)
    ended = [f for f in finals if _finalize(conn, f)]
    done = conn.execute(_SUCCEED, {"runs": maybe_done}).all() if maybe_done else []
    return [(f.run_id, f.status) for f in ended] + [(str(r[0]), RunStatus.SUCCEEDED) for r in done]


def merge_steps(events: list[StepEvent]) -> list[StepEvent]:
    """One event per (run, step, attempt): the latest status, keeping when it started."""
    merged: dict[tuple[str, str, int], StepEvent] = {}
    for event in events:
        key = (event.run_id, event.step_id, event.attempt)
        first = merged.get(key)
        if first is None:
            merged[key] = event
            continue
        merged[key] = replace(
            event,
            started_at=event.started_at or _started(first),
            worker=event.worker or first.worker,
            starts_run=first.starts_run or event.starts_run,
        )
    return list(merged.values())


def _started(event: StepEvent) -> datetime | None:
    return event.started_at or (event.at if event.status == StepStatus.RUNNING else None)


def _write_steps(conn: Connection, steps: list[StepEvent]) -> None:
    starts = [{"run_id": e.run_id, "at": e.started_at or e.at} for e in steps if e.starts_run]
    if starts:
        conn.execute(_RUN_START, starts)
    if not steps:
        return
    latest = {(e.run_id, e.step_id): e for e in sorted(steps, key=lambda e: e.attempt)}
    conn.execute(_STEP, _columns(list(latest.values())))
    tried = [e for e in steps if e.status not in (StepStatus.SKIPPED, StepStatus.CANCELLED)]
    if tried:
        conn.execute(_ATTEMPT, _columns(tried))


def _columns(events: list[StepEvent]) -> dict[str, list[Any]]:
    """The events' parameters as one array per column, for ``unnest``."""
    rows = [_step_params(e) for e in events]
    return {name: [row[name] for row in rows] for name in rows[0]}


def _step_params(event: StepEvent) -> dict[str, Any]:
    return {
        "run_id": event.run_id,
        "step_id": event.step_id,
        "attempt": event.attempt,
        "status": event.status.value,
        "worker": _TEXT(event.worker),
        "started_at": _started(event),
        "finished_at": event.at if event.status in ATTEMPT_ENDED else None,
        "result": None if event.result is UNSET else codec.for_postgres(event.result),
        "error": _TEXT(event.error),
        "traceback": _TEXT(event.traceback),
    }


def _finalize(conn: Connection, final: RunFinal) -> bool:
    """Write a run's end; True when it was a failure that this call recorded."""
    if final.status == RunStatus.SUCCEEDED:
        conn.execute(
            _OUTPUT,
            {"run_id": final.run_id, "at": final.at, "output": codec.for_postgres(final.output)},
        )
        if final.settled:
            conn.execute(_SETTLE, _settle_params(final))
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


def _settle_params(final: RunFinal) -> dict[str, Any]:
    rows = final.settled
    return {
        "run_id": final.run_id,
        "at": final.at,
        "step_id": [r.step_id for r in rows],
        "result": [codec.for_postgres(codec.Encoded(r.result)) for r in rows],
        "attempt": [r.attempt for r in rows],
        "skipped": [r.skipped for r in rows],
        "started_at": [r.started_at for r in rows],
        "finished_at": [r.finished_at for r in rows],
    }


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
