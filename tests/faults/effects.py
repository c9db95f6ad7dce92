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

from orchestrator import current_run, retry, task

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
-- a retry after a commit whose reply was lost (PostgreSQL restarted) must not count twice
CREATE UNIQUE INDEX IF NOT EXISTS executions_exec_id ON executions (exec_id);
CREATE INDEX IF NOT EXISTS effects_run ON effects (run_id, step_id);
-- chaos test: when a step body ended (NULL: killed) and when it was last seen alive
ALTER TABLE executions ADD COLUMN IF NOT EXISTS ended_at timestamptz;
ALTER TABLE executions ADD COLUMN IF NOT EXISTS seen_at timestamptz;
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
                    "inserted) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (exec_id) DO NOTHING",
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


# -- chaos (tests/faults/test_chaos.py) -------------------------------------------------------
#
# A chaos step follows a plan given in its kwargs: ``fails`` lists what attempts 1, 2, ... do
# ("raise": ConnectionError after ``sleep``; "hang": run until the step's hard ``timeout`` kills
# it); the attempts after those succeed. Every execution gets an ``executions`` row (its effect,
# once per idempotency key, only on the attempt that succeeds), a ``seen_at`` heartbeat every
# 0.2 s while it runs and an ``ended_at`` when its body ends (raised or returned): an execution
# with no ``ended_at`` was killed, and was provably alive until ``seen_at``.


def _execution_started(effect: bool, budget: float = 60.0) -> str:
    """Count this execution (and write the effect once per key when ``effect``); its exec_id."""
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
                    "inserted, seen_at) VALUES (%s, %s, %s, %s, %s, %s, %s, clock_timestamp()) "
                    "ON CONFLICT (exec_id) DO NOTHING",
                    (exec_id, key, run, step, attempt, os.getpid(), inserted),
                )
            return exec_id
        except psycopg.OperationalError:
            _drop_connection()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _execution_mark(exec_id: str, ended: bool, budget: float = 0.0) -> None:
    """Heartbeat (``seen_at``), or ``ended_at`` too; a heartbeat is best effort (one try)."""
    sql = "UPDATE executions SET seen_at = clock_timestamp()"
    sql += ", ended_at = clock_timestamp()" if ended else ""
    deadline = time.monotonic() + budget
    while True:
        try:
            conn = _connection()
            with conn.transaction():
                conn.execute(sql + " WHERE exec_id = %s", (exec_id,))
            return
        except psycopg.OperationalError:
            _drop_connection()
            if time.monotonic() > deadline:
                if ended:
                    raise
                return
            time.sleep(0.2)


def _chaos_sleep(exec_id: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(0.2, left))
        _execution_mark(exec_id, ended=False)


def _chaos_value(kind: str) -> Any:
    """The step's result: a plain string, or a type Celery's JSON accepts and json does not."""
    import datetime
    import decimal

    if kind == "datetime":
        return datetime.datetime.now(datetime.UTC)
    if kind == "decimal":
        return decimal.Decimal("12.50")
    if kind == "uuid":
        return uuid.uuid4()
    return current_run.step_id


def _chaos(
    fails: list[str] | tuple[str, ...] = (),
    sleep: float = 0.0,
    result: str = "str",
    hang_cap: float = 120.0,
) -> Any:
    attempt = current_run.attempt
    mode = fails[attempt - 1] if attempt <= len(fails) else "ok"
    exec_id = _execution_started(effect=mode == "ok")
    try:
        if mode == "hang":
            _chaos_sleep(exec_id, hang_cap)  # killed by the step's hard timeout long before
            raise RuntimeError(f"attempt {attempt} was planned to hang; no time limit killed it")
        _chaos_sleep(exec_id, sleep)
        if mode == "raise":
            raise ConnectionError(f"planned failure of attempt {attempt}")
    finally:
        _execution_mark(exec_id, ended=True, budget=60.0)
    return _chaos_value(result)


@task
def chaos(*args: Any, **kwargs: Any) -> Any:
    """A chaos step with no retry policy of its own (a step may give one: ``retry=``)."""
    return _chaos(**_plan(kwargs))


@task
@retry(max_attempts=2, base_delay=0.2, backoff=2.0, jitter=False)
def chaos_r2(*args: Any, **kwargs: Any) -> Any:
    return _chaos(**_plan(kwargs))


@task
@retry(max_attempts=4, base_delay=0.1, backoff=1.5, max_delay=1.0, jitter=True)
def chaos_r4(*args: Any, **kwargs: Any) -> Any:
    return _chaos(**_plan(kwargs))


@task
@retry(max_attempts=5, base_delay=0.05, backoff=2.0, max_delay=0.5, jitter=True)
def chaos_r5(*args: Any, **kwargs: Any) -> Any:
    """The README's ``@retry(max_attempts=5)`` shape, with short delays."""
    return _chaos(**_plan(kwargs))


@task
@retry(max_attempts=7, base_delay=0.05, backoff=1.5, max_delay=0.3, jitter=False)
def chaos_r7(*args: Any, **kwargs: Any) -> Any:
    return _chaos(**_plan(kwargs))


def _plan(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The chaos plan among a step's keyword arguments (the run's inputs may be there too)."""
    return {k: kwargs[k] for k in ("fails", "sleep", "result") if k in kwargs}


CHAOS_TASKS = {
    "chaos": (chaos, None),
    "chaos_r2": (chaos_r2, 2),
    "chaos_r4": (chaos_r4, 4),
    "chaos_r5": (chaos_r5, 5),
    "chaos_r7": (chaos_r7, 7),
}
"""Chaos task -> (task, the max_attempts of its own ``@retry``; None: no policy)."""


# -- default settings (tests/faults/test_defaults.py) -----------------------------------------
#
# Each of these steps counts its execution in ``executions`` with ``seen_at`` set at the start
# (the marker that the row will get an ``ended_at``) and ``ended_at`` when the body ends, raised
# or returned, so two executions of one step that overlap in time can be told
# (``harness.FaultCluster.overlapping_executions``). The effect is written, once per idempotency
# key, only by an attempt that succeeds.


@task
def timed_effect(*args: Any, sleep: float = 0.0, **kwargs: Any) -> str:
    """Write the step's effect, take ``sleep`` seconds, record when the body ended."""
    exec_id = _execution_started(effect=True)
    try:
        if sleep:
            time.sleep(sleep)
    finally:
        _execution_mark(exec_id, ended=True, budget=60.0)
    return str(current_run.step_id)


@task
@retry(max_attempts=5)
def retried5(*args: Any, succeed_on: int = 5, **kwargs: Any) -> int:
    """The README's ``@retry(max_attempts=5)``: raise ``ConnectionError`` before ``succeed_on``."""
    attempt = current_run.attempt
    exec_id = _execution_started(effect=attempt >= succeed_on)
    try:
        if attempt < succeed_on:
            raise ConnectionError(f"attempt {attempt} failed")
    finally:
        _execution_mark(exec_id, ended=True, budget=60.0)
    return int(attempt)


@task
def times_out_once(*args: Any, first: float = 60.0, **kwargs: Any) -> int:
    """Attempt 1 runs ``first`` seconds (past the step's hard ``timeout``); later ones return."""
    attempt = current_run.attempt
    exec_id = _execution_started(effect=attempt > 1)
    try:
        if attempt == 1:
            time.sleep(first)
    finally:
        _execution_mark(exec_id, ended=True, budget=60.0)
    return int(attempt)


@task
def fails_then_succeeds(*args: Any, sleep: float = 0.0, succeed_on: int = 2, **kwargs: Any) -> int:
    """Before attempt ``succeed_on``: take ``sleep`` seconds, then raise ``ConnectionError``."""
    attempt = current_run.attempt
    exec_id = _execution_started(effect=attempt >= succeed_on)
    try:
        if attempt < succeed_on:
            if sleep:
                time.sleep(sleep)
            raise ConnectionError(f"attempt {attempt} failed")
    finally:
        _execution_mark(exec_id, ended=True, budget=60.0)
    return int(attempt)


@task
def typed(*args: Any, kind: str = "datetime", **kwargs: Any) -> Any:
    """A value Celery's JSON encodes and the standard library's ``json`` refuses."""
    import datetime
    import decimal

    if kind == "datetime":
        return datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)
    if kind == "decimal":
        return decimal.Decimal("12.50")
    return uuid.UUID("12345678-1234-5678-1234-567812345678")


@task
def passthrough(value: Any, **kwargs: Any) -> Any:
    """Return what the parent step returned (as received)."""
    return value


@task
def type_names(parents: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """The parents' results as received, and the names of their types."""
    return {"values": parents, "types": {k: type(v).__name__ for k, v in parents.items()}}


class Opaque:
    """An object no JSON encoder knows."""


@task
def opaque(*args: Any, **kwargs: Any) -> Any:
    """Return an object Celery's JSON cannot encode."""
    return Opaque()


_kv_client: Any = None
_kv_pid = 0
KV_EXECUTIONS = "faults:kv:executions"
KV_ENDED = "faults:kv:ended"


def _kv() -> Any:
    import redis

    global _kv_client, _kv_pid
    if _kv_client is None or _kv_pid != os.getpid():
        _kv_client = redis.Redis.from_url(
            os.environ["ORCHESTRATOR_REDIS_URL"], socket_timeout=5, socket_connect_timeout=5
        )
        _kv_pid = os.getpid()
    return _kv_client


@task
def kv_effect(*args: Any, sleep: float = 0.0, **kwargs: Any) -> str:
    """Like ``timed_effect``, but the effect and the execution go to Redis, not PostgreSQL.

    For faults of PostgreSQL: a step's own work does not depend on orchestrator's history
    database. ``test_defaults.import_kv`` copies the records into ``effects``/``executions``.
    """
    import json

    client = _kv()
    run, step, attempt = current_run.run_id, current_run.step_id, current_run.attempt
    key, exec_id = current_run.idempotency_key, uuid.uuid4().hex
    at = time.time()
    inserted = bool(client.set(f"faults:kv:effect:{key}", at, nx=True))
    record = {
        "exec_id": exec_id,
        "key": key,
        "run_id": run,
        "step_id": step,
        "attempt": attempt,
        "pid": os.getpid(),
        "inserted": inserted,
        "at": at,
    }
    client.rpush(KV_EXECUTIONS, json.dumps(record))
    try:
        if sleep:
            time.sleep(sleep)
    finally:
        client.hset(KV_ENDED, exec_id, time.time())
    return str(step)
