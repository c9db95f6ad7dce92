"""The console's run page and API show what a step waits for and the run's context (in-memory
twins, no servers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from orchestrator.client import run_workflow
from orchestrator.engine.run_context import SharedContext
from orchestrator.engine.services import services_of
from orchestrator.settings import Settings
from orchestrator.testing.inline import InlineWorker, SkippingClock, inline_app, memory_adapters
from orchestrator.web import create_console
from tests.web import workload

AUTH = ("ops", "s3cret-pass")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, object]]:
    settings = Settings(
        ui_auth=SecretStr(":".join(AUTH)),
        task_modules=["tests.web.workload"],
        workflows_path=str(tmp_path / "no-yaml"),
    )
    app = inline_app(settings, memory_adapters())
    worker = InlineWorker(app, SkippingClock())
    try:
        yield TestClient(create_console(app)), app
    finally:
        worker.purge()
        services_of(app).close()


def test_a_paused_runs_page_says_what_its_step_waits_for_and_shows_its_context(
    served: tuple[TestClient, object], tmp_path: Path
) -> None:
    client, app = served
    run = run_workflow(workload.flaky, {"marker": str(tmp_path / "m")}, app=app)
    run.pause()
    SharedContext(services_of(app), run.id, "console_flaky", "needs").set("owner", "ann")

    found = client.get(f"/api/v1/runs/{run.id}", auth=AUTH).json()
    page = client.get(f"/runs/{run.id}", auth=AUTH).text

    waiting = [s for s in found["steps"] if s["waiting_for"]]
    assert [s["waiting_for"] for s in waiting] == ["paused"]
    assert f"orchestrator resume {run.id}" in waiting[0]["waiting_detail"]
    assert found["context"] == {"owner": "ann"}
    assert 'data-waiting="paused"' in page and "Context" in page and "ann" in page
