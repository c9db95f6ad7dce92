"""Steps of the fault suite (``ORCHESTRATOR_TASK_MODULES=tests.faults.effects``).

Every execution of a step body is counted in ``executions`` (no uniqueness on the step: one row
per execution, ``exec_id`` only de-duplicates our own retry of a lost commit), and its side effect
is written once per ``current_run.idempotency_key`` into ``effects`` with
``INSERT ... ON CONFLICT (key) DO NOTHING``. So:

* re-executions = executions - distinct (run, step) executed;
* duplicated effects = effect rows beyond the first for one (run, step): a second effect that the
  idempotency key did not absorb (a changed attempt number for the same logical execution);
* absorbed = executions whose effect insert hit the key (``inserted = false``).

The effect write retries its own connection for up to a minute, like any well-behaved effect
writer, so a PostgreSQL restart delays a step instead of failing it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from typing import Any

import psycopg

from orchestrator import current_run, task

TABLES = """
CREATE TABLE IF NOT EXISTS effects (
    key text PRIMARY KEY,
    run_id uuid NOT NULL,
    step_id text NOT NULL,
    attempt int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS executions (
    id bigserial PRIMARY KEY,
    exec_id text NOT NULL,
    key text NOT NULL,
    run_id uuid NOT NULL,
    step_id text NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    inserted boolean,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS executions_run ON executions (run_id, step_id);
CREATE INDEX IF NOT EXISTS effects_run ON effects (run_id, step_id);
"""

_conn: psycopg.Connection[Any] | None = None
_conn_pid = 0


def _connection() -> psycopg.Connection[Any]:
    global _conn, _conn_pid
    if _conn is None or _conn_pid != os.getpid() or _conn.closed:
        _conn = psycopg.connect(os.environ["ORCHESTRATOR_DATABASE_URL"], connect_timeout=3)
        _conn_pid = os.getpid()
    return _conn


def _drop_connection() -> None:
    global _conn
    if _conn is not None:
        with contextlib.suppress(Exception):
            _conn.close()
    _conn = None


def _write(effect: bool, budget: float = 60.0) -> bool | None:
    """Count this execution and (if ``effect``) write the step's effect once per key."""
    run, step, attempt = current_run.run_id, current_run.step_id, current_run.attempt
    key, exec_id = current_run.idempotency_key, uuid.uuid4().hex
    deadline = time.monotonic() + budget
    while True:
        try:
            conn = _connection()
            with conn.transaction():
                inserted = None
                if effect:
                    row = conn.execute(
                        "INSERT INTO effects (key, run_id, step_id, attempt) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key",
                        (key, run, step, attempt),
                    ).fetchone()
                    inserted = row is not None
                conn.execute(
                    "INSERT INTO executions (exec_id, key, run_id, step_id, attempt, pid, "
                    "inserted) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (exec_id, key, run, step, attempt, os.getpid(), inserted),
                )
            return inserted
        except psycopg.OperationalError:
            _drop_connection()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@task
def effect(*args: Any, sleep: float = 0.0, **kwargs: Any) -> str:
    """Write the step's effect, then take ``sleep`` seconds."""
    _write(effect=True)
    if sleep:
        time.sleep(sleep)
    return current_run.step_id


@task
def slow(*args: Any, seconds: float = 2.0, **kwargs: Any) -> str:
    """Write the step's effect, then take ``seconds`` (a long step to be killed in)."""
    _write(effect=True)
    time.sleep(seconds)
    return current_run.step_id


@task
def suicide(*args: Any, **kwargs: Any) -> None:
    """Count the execution, then SIGKILL the process running it: every delivery dies."""
    _write(effect=False)
    os.kill(os.getpid(), signal.SIGKILL)


@task
def flaky(*args: Any, succeed_on: int = 2, **kwargs: Any) -> int:
    """Count the execution; raise ``ConnectionError`` (retryable) before attempt ``succeed_on``."""
    _write(effect=current_run.attempt >= succeed_on)
    if current_run.attempt < succeed_on:
        raise ConnectionError(f"attempt {current_run.attempt} failed")
    return current_run.attempt
