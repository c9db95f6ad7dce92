"""pytest fixtures for tests of your workflows against real Redis, PostgreSQL and a worker.

Opt in per run (``pytest -p orchestrator.testing.pytest_plugin``) or per project, in the
top-level ``conftest.py``: ``pytest_plugins = ["orchestrator.testing.pytest_plugin"]``. Then::

    def test_nightly(orchestrator_worker, orchestrator_app):
        run = run_workflow("nightly", {"day": "2026-01-02"})
        assert run.wait(timeout=30) == {"rows": 3}

* ``orchestrator_cluster`` (session): an :class:`~orchestrator.testing.cluster.Cluster`: the
  servers of ``ORCHESTRATOR_REDIS_URL``/``ORCHESTRATOR_DATABASE_URL`` in a db and database of
  the session's own, or servers of its own when those are unset; migrated; this process
  pointed at it. Start more workers or beat with its methods.
* ``orchestrator_worker`` (session): one ``celery -A orchestrator.worker worker -c 2`` process.
* ``orchestrator_app`` (test): the default app, pointed at the cluster.
* ``orchestrator_task_modules`` (session): the modules the worker and this process import;
  override the fixture, or set the ``orchestrator_task_modules`` ini option or
  ``ORCHESTRATOR_TASK_MODULES`` (comma-separated). Other ``ORCHESTRATOR_*`` settings in the
  environment (timings, workflows path) reach the cluster's processes as they are.

The session's directory (worker logs) is removed at the end, or kept and named when a test
failed.

Why not pytest-celery's fixtures: its ``celery_worker`` runs in Docker, and the
``celery.contrib.pytest`` ones it re-exports (``celery_session_worker``) run a worker thread in
the test process on an app of their own, without what ``celery -A orchestrator.worker`` sets up
(reconciler, delay pump, prefork pool with hard time limits); a worker process has all of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from orchestrator.app import get_app
from orchestrator.settings import Settings
from orchestrator.testing.cluster import Cluster, environ_settings
from orchestrator.testing.workers import Worker

INI_TASK_MODULES = "orchestrator_task_modules"
KEPT = pytest.StashKey[list[tuple[str, Path]]]()
"""The session's clusters kept because a test failed: (what, directory)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI_TASK_MODULES,
        "modules the orchestrator_worker imports to register tasks (comma or space separated)",
        default="",
    )


@pytest.fixture(scope="session")
def orchestrator_task_modules(pytestconfig: pytest.Config) -> list[str]:
    """The ini option, else ``ORCHESTRATOR_TASK_MODULES``, else orchestrator's default."""
    given = str(pytestconfig.getini(INI_TASK_MODULES)) or os.environ.get(
        "ORCHESTRATOR_TASK_MODULES", ""
    )
    modules = [part for part in re.split(r"[,\s]+", given) if part]
    return modules or Settings.model_fields["task_modules"].get_default(call_default_factory=True)


@pytest.fixture(scope="session")
def orchestrator_cluster(
    request: pytest.FixtureRequest, orchestrator_task_modules: list[str]
) -> Iterator[Cluster]:
    settings = environ_settings()
    settings["ORCHESTRATOR_TASK_MODULES"] = ",".join(orchestrator_task_modules)
    cluster = Cluster(settings, name="orchestrator-pytest").start()
    yield cluster
    close_cluster(request, cluster, "orchestrator cluster")


def close_cluster(request: pytest.FixtureRequest, cluster: Cluster, what: str) -> None:
    """Close a session's cluster at its end: its directory is removed, or kept when a test
    failed and named (as ``what``) in the terminal summary, by :func:`pytest_terminal_summary`
    (a fixture's own output would be captured). A conftest that closes its own cluster this way
    names the hook among its globals too."""
    failed = request.session.testsfailed > 0
    cluster.close(keep=failed)
    if failed:
        request.config.stash.setdefault(KEPT, []).append((what, cluster.root))


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Name the kept cluster directories (once, also when the hook is registered twice)."""
    kept, config.stash[KEPT] = config.stash.get(KEPT, []), []
    for what, root in kept:
        terminalreporter.write_line(f"{what} kept at {root} (worker logs)")


@pytest.fixture(scope="session")
def orchestrator_worker(orchestrator_cluster: Cluster) -> Worker:
    return orchestrator_cluster.start_worker("pytest")


@pytest.fixture
def orchestrator_app(orchestrator_cluster: Cluster) -> Celery:
    return get_app()
