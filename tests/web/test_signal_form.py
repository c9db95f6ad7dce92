"""The run page's signal form and ``POST /api/v1/runs/{id}/signal``: CSRF-protected, a bad
payload is a 400 with nothing sent, a signal ends the run's ``wait_for`` (in-memory twins)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from pydantic import SecretStr

from orchestrator import Workflow
from orchestrator.client import run_workflow
from orchestrator.engine.services import services_of
from orchestrator.settings import Settings
from orchestrator.testing.inline import InlineWorker, SkippingClock, inline_app, memory_adapters
from orchestrator.web import create_console

AUTH = ("ops", "s3cret-pass")
APPROVAL = Workflow("console_approval").wait_for("approval", signal="approved", timeout=3600)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Celery, InlineWorker]]:
    settings = Settings(
        ui_auth=SecretStr(":".join(AUTH)), task_modules=[], workflows_path=str(tmp_path / "none")
    )
    app = inline_app(settings, memory_adapters())
    worker = InlineWorker(app, SkippingClock())
    try:
        yield TestClient(create_console(app)), app, worker
    finally:
        worker.purge()
        services_of(app).close()


def _deliver_now(worker: InlineWorker) -> None:
    for request in worker.take():
        request.execute()


def test_the_signal_form_ends_a_waiting_step(
    served: tuple[TestClient, Celery, InlineWorker],
) -> None:
    client, app, worker = served
    run = run_workflow(APPROVAL, {}, app=app)
    _deliver_now(worker)  # the step parks
    page = client.get(f"/runs/{run.id}", auth=AUTH).text
    assert f'action="/runs/{run.id}/signal"' in page
    token = re.search(r'name="csrf_token" value="(\w+)"', page)
    assert token is not None

    refused = client.post(
        f"/runs/{run.id}/signal", auth=AUTH, data={"name": "approved", "payload": "1"}
    )
    bad = client.post(
        f"/runs/{run.id}/signal",
        auth=AUTH,
        data={"csrf_token": token[1], "name": "approved", "payload": "{oops"},
    )
    assert refused.status_code == 403 and bad.status_code == 400 and "not JSON" in bad.text
    assert run.signals() == []

    sent = client.post(
        f"/runs/{run.id}/signal",
        auth=AUTH,
        data={"csrf_token": token[1], "name": "approved", "payload": '{"by": "ann"}'},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    worker.run(lambda: run.status().terminal, 10)
    assert run.wait(timeout=1) == {"by": "ann"}
    [signal] = run.signals()
    assert signal.sender == f"{AUTH[0]} (console)"


def test_the_api_sends_a_signal_and_refuses_a_bad_one(
    served: tuple[TestClient, Celery, InlineWorker],
) -> None:
    client, app, worker = served
    run = run_workflow(APPROVAL, {}, app=app)
    token = client.get("/api/v1/csrf", auth=AUTH).json()["csrf_token"]
    headers = {"X-CSRF-Token": token}
    path = f"/api/v1/runs/{run.id}/signal"
    nameless = client.post(path, auth=AUTH, headers=headers, json={"payload": 1})
    assert nameless.status_code == 400 and "no name" in nameless.json()["detail"]
    done = client.post(path, auth=AUTH, headers=headers, json={"name": "approved", "payload": 7})
    assert done.status_code == 200 and done.json()["action"] == "signal"
    worker.run(lambda: run.status().terminal, 10)
    assert run.wait(timeout=1) == 7
    ended = client.post(path, auth=AUTH, headers=headers, json={"name": "approved"})
    assert ended.status_code == 409
