"""The submit path on real Redis and PostgreSQL (``engine.submit``): Redis away is reported before
anything is written, a run is written once, and a run whose submitter died before publishing it
is published by the reconciler, once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator import ServiceUnavailable, Workflow, run_workflow
from orchestrator.app import create_app, default_services
from orchestrator.engine.canvas import CanvasBuilder
from orchestrator.engine.services import services_of
from orchestrator.ops.reconciler import Reconciler
from orchestrator.settings import Settings
from orchestrator.status import RunStatus
from tests.integration import workload

pytestmark = pytest.mark.integration
QUEUE = "submit-path-nowhere"  # no worker consumes it: a run published there waits


class Killed(BaseException):
    """The submitting process killed between writing the run and publishing it."""


@pytest.fixture
def parked(servers: dict[str, str]) -> Iterator[Workflow]:
    """A one-step workflow of a name of its own on a queue no worker consumes; emptied after."""
    yield Workflow(f"submit-{uuid.uuid4().hex[:8]}").step("a", workload.noop, queue=QUEUE)
    with default_services().app.connection_for_write() as conn:
        conn.default_channel.queue_purge(QUEUE)


def _waiting() -> int:
    with default_services().app.connection_for_write() as conn:
        return int(conn.default_channel.queue_declare(QUEUE).message_count)


def test_redis_away_is_reported_before_anything_is_written(parked: Workflow) -> None:
    app = create_app(Settings(redis_url="redis://:pw@127.0.0.1:2/0"))
    with pytest.raises(ServiceUnavailable, match="cannot reach Redis at redis://:\\*\\*\\*@"):
        run_workflow(parked, app=app)
    assert default_services().history.list_runs(parked.name) == []


def test_a_run_is_published_once_however_long_it_waits(parked: Workflow) -> None:
    # Given a run published by its submitter, whose message waits in its queue
    run = parked.run()
    record = run.record()
    assert record.status == RunStatus.PENDING
    assert record.published_at == record.created_at  # in the transaction that wrote it
    assert run.id not in default_services().state.unconfirmed_runs(older_than=0)
    # When the reconciler looks over a lease period later
    rt = services_of(create_app(Settings(lease_seconds=1.0)))
    time.sleep(1.2)
    Reconciler(rt)._publish_unpublished()
    # Then it was not published again
    assert [kind for _, kind, _ in run.events()] == []
    assert _waiting() == 1


def test_a_run_whose_submitter_died_before_publishing_is_published_once(
    parked: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submitter killed after writing a run and before publishing it
    def killed(self: CanvasBuilder, segment: Any) -> None:
        raise Killed

    monkeypatch.setattr(CanvasBuilder, "publish", killed)
    with pytest.raises(Killed):
        parked.run()
    monkeypatch.undo()
    [record] = default_services().history.list_runs(parked.name)
    assert record.status == RunStatus.PENDING and _waiting() == 0
    # When the reconciler looks over a lease period later, twice
    rt = services_of(create_app(Settings(lease_seconds=1.0)))
    reconciler = Reconciler(rt)
    reconciler._publish_unpublished()
    assert rt.history.events(record.id) == []  # not before
    time.sleep(1.2)
    assert reconciler._publish_unpublished() >= 1
    reconciler._publish_unpublished()
    # Then it was published, once
    assert [kind for _, kind, _ in rt.history.events(record.id)] == ["recovered"]
    assert _waiting() == 1
