"""Real servers and real ``celery worker`` processes for the integration tests: one
:class:`~orchestrator.testing.cluster.Cluster` for the session.

With ``ORCHESTRATOR_REDIS_URL`` (or ``ORCHESTRATOR_BROKER_URL``) and ``ORCHESTRATOR_DATABASE_URL``
set, the tests use those servers, in a Redis db and a database of their own that they empty and
drop afterwards; without them the cluster starts Redis and PostgreSQL of its own. Other
``ORCHESTRATOR_*`` settings in the environment reach the cluster's processes as they are. The
cluster's directory (worker logs) is kept, and named, when a test failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.testing import pytest_plugin
from orchestrator.testing.cluster import Cluster, environ_settings
from orchestrator.testing.workers import Worker

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "ORCHESTRATOR_TASK_MODULES": (
        "tasks,tests.integration.workload,tests.integration.async_tasks,tests.integration.shapes"
    ),
    "ORCHESTRATOR_WORKFLOWS_PATH": str(ROOT / "config" / "workflows"),
}
# names the kept cluster's directory at the end of the session (see ``close_cluster``)
pytest_terminal_summary = pytest_plugin.pytest_terminal_summary


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The session's servers and workers; this process is pointed at them."""
    cluster = Cluster({**environ_settings(), **SETTINGS}, name="orchestrator-integration")
    cluster.start()
    # every process logs what it publishes (``workload._log_publish``) to the cluster's Redis
    cluster.extra_env["ORCHESTRATOR_TEST_PUBLISH_LOG"] = cluster.redis_url
    cluster.activate()
    yield cluster
    pytest_plugin.close_cluster(request, cluster, "integration cluster")


@pytest.fixture(scope="session")
def servers(cluster: Cluster) -> dict[str, str]:
    """The ORCHESTRATOR_* environment of this test session (own database, own Redis db)."""
    return cluster.env()


@pytest.fixture(scope="session")
def start_worker(cluster: Cluster) -> Callable[..., Worker]:
    """Factory: start a worker (name prefix, concurrency, extra environment and arguments);
    all are stopped at the end."""
    return cluster.start_worker


@pytest.fixture(scope="session")
def worker(cluster: Cluster) -> Worker:
    """One shared two-process prefork worker."""
    return cluster.start_worker("shared")


@pytest.fixture
def published(servers: dict[str, str]) -> Callable[[], list[tuple[str, int]]]:
    """Messages published since the test began: (task name, size in bytes)."""
    client = redis.Redis.from_url(servers["ORCHESTRATOR_TEST_PUBLISH_LOG"])
    client.delete("test:published")

    def read() -> list[tuple[str, int]]:
        return [tuple(json.loads(x)) for x in client.lrange("test:published", 0, -1)]

    return read
