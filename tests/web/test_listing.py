"""The console's listings answer alike from PostgreSQL and from the in-memory twin: filters,
search by run id prefix, idempotency key or correlation id, keyset pages, counts over time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.ports import RunHistory
from orchestrator.records import NewRun, NewStep, RunQuery
from orchestrator.settings import get_settings
from orchestrator.status import RunStatus
from orchestrator.stores.memory.history import MemoryHistory
from orchestrator.stores.postgres.store import HistoryStore
from orchestrator.testing.cluster import Cluster

pytestmark = pytest.mark.integration

IDS = sorted(str(uuid.uuid4()) for _ in range(12))


def new_run(i: int, run_id: str) -> NewRun:
    return NewRun(
        id=run_id,
        workflow="etl" if i % 3 else "report",
        version="v1",
        spec={"name": "x", "steps": []},
        inputs={"i": i},
        trigger="api",
        idempotency_key=f"key-{i}" if i % 4 == 0 else None,
        correlation_id="order-7" if i in (2, 5) else None,
    )


def fill(history: RunHistory) -> None:
    for i, run_id in enumerate(IDS):
        history.create_run(new_run(i, run_id), [NewStep("a", "t.a", f"{run_id}:a")])
        if i % 5 == 0:
            history.cancel_run(run_id, "test")


@pytest.fixture(scope="module")
def stores() -> Iterator[tuple[RunHistory, RunHistory]]:
    with Cluster(name="orchestrator-listing"):
        postgres = HistoryStore(get_settings().sqlalchemy_url)
        memory = MemoryHistory()
        fill(postgres)
        fill(memory)
        try:
            yield postgres, memory
        finally:
            postgres.dispose()


QUERIES = [
    RunQuery(),
    RunQuery(workflow="etl"),
    RunQuery(status=RunStatus.CANCELLED),
    RunQuery(workflow="report", status=RunStatus.PENDING),
    RunQuery(search=IDS[3][:6]),
    RunQuery(search=IDS[7]),
    RunQuery(search="key-8"),
    RunQuery(search="order-7"),
    RunQuery(search="not-there"),
    RunQuery(since=datetime.now(UTC) + timedelta(hours=1)),
    RunQuery(until=datetime.now(UTC) - timedelta(hours=1)),
]


@pytest.mark.parametrize("query", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
def test_a_listing_finds_the_same_runs_in_postgres_and_in_memory(
    stores: tuple[RunHistory, RunHistory], query: RunQuery
) -> None:
    postgres, memory = stores
    found = [r.id for r in postgres.find_runs(query, 100)]
    assert found == [r.id for r in memory.find_runs(query, 100)]
    if query.search == "order-7":
        assert sorted(found) == sorted([IDS[2], IDS[5]])
    if query.search and len(query.search) == 6:
        assert found == [IDS[3]]


def test_pages_after_a_cursor_hold_every_run_once_newest_first(
    stores: tuple[RunHistory, RunHistory],
) -> None:
    for history in stores:
        seen: list[str] = []
        query = RunQuery(workflow="etl")
        while page := history.find_runs(query, 3):
            seen += [r.id for r in page]
            query = RunQuery(workflow="etl", after=(page[-1].created_at, page[-1].id))
        everything = history.find_runs(RunQuery(workflow="etl"), 100)
        assert seen == [r.id for r in everything] and len(seen) == 8


def test_counts_over_time_agree(stores: tuple[RunHistory, RunHistory]) -> None:
    since = datetime.now(UTC) - timedelta(hours=1)
    for history in stores:
        counts = {c.status: c.n for c in history.run_counts(since, 3600 * 24)}
        assert counts == {RunStatus.PENDING: 9, RunStatus.CANCELLED: 3}
        assert history.step_durations(since, 3600) == []  # no step ever started
