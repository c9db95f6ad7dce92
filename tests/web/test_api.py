"""The console's HTTP surface without a browser or servers: the login on every route, CSRF on
every change, 404 and 400 with their reasons, and the refusal to start without credentials.

The console runs on an app with the in-memory twins of every store; runs it starts are executed
by ``orchestrator.testing``'s inline worker, in this process.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import SecretStr

from orchestrator.engine.services import services_of
from orchestrator.records import NewRun, NewStep, RunQuery
from orchestrator.settings import Settings
from orchestrator.stores.memory.history import MemoryHistory
from orchestrator.testing.inline import InlineWorker, SkippingClock, inline_app, memory_adapters
from orchestrator.web import create_console
from orchestrator.web.app import ROUTERS
from orchestrator.web.auth import ConsoleRefused, Login
from tests.web import workload  # noqa: F401  (registers the workflows)

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "ops", "s3cret-pass"
AUTH = (USER, PASSWORD)
PATH_VALUES = {
    "run_id": "00000000-0000-4000-8000-000000000000",
    "action": "cancel",
    "name": "console_flaky",
    "letter_id": "1",
}


@dataclass
class Console:
    app: FastAPI
    client: TestClient
    worker: InlineWorker
    history: MemoryHistory

    def csrf(self) -> str:
        token = self.client.get("/api/v1/csrf", auth=AUTH).json()["csrf_token"]
        return str(token)

    def post(self, path: str, **kwargs: Any) -> Any:
        headers = {"X-CSRF-Token": self.csrf()}
        return self.client.post(path, auth=AUTH, headers=headers, **kwargs)

    def start_flaky(self, marker: Path, **extra: Any) -> str:
        """A run of console_flaky executed to its end; its id."""
        body = {"inputs": {"marker": str(marker)}, **extra}
        answer = self.post("/api/v1/workflows/console_flaky/runs", json=body)
        assert answer.status_code == 200, answer.text
        self.worker.run(lambda: False, 30)
        return str(answer.json()["run_id"])


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    settings = Settings(
        ui_auth=SecretStr(f"{USER}:{PASSWORD}"),
        task_modules=["tests.web.workload"],
        workflows_path=str(tmp_path / "no-yaml"),
    )
    history = MemoryHistory()
    app = inline_app(settings, memory_adapters(history=history))
    worker = InlineWorker(app, SkippingClock())
    web = create_console(app)
    try:
        yield Console(web, TestClient(web), worker, history)
    finally:
        worker.purge()
        services_of(app).close()


def every_route(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route of the console, path parameters filled in, the OpenAPI
    document, a static file and a path no route has."""
    found = [
        (method, re.sub(r"{(\w+)}", lambda m: PATH_VALUES[m[1]], route.path))
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
    ]
    assert app.openapi_url == "/api/v1/openapi.json"
    extra = [("GET", app.openapi_url), ("GET", "/static/vendor/htmx.min.js"), ("GET", "/nowhere")]
    return [*found, *extra]


def test_every_route_but_the_login_form_needs_the_credentials(console: Console) -> None:
    routes = every_route(console.app)
    assert ("GET", "/api/v1/openapi.json") in routes and len(routes) > 30
    for method, path in routes:
        if path == "/login":
            continue
        # When a route is asked without credentials, or with a wrong password
        anonymous = console.client.request(method, path)
        wrong = console.client.request(method, path, auth=(USER, "guess"))
        # Then it answers 401: the API asks for basic auth, a page shows the login form
        for answer in (anonymous, wrong):
            assert answer.status_code == 401, (method, path, answer.status_code)
            if path.startswith("/api/"):
                assert answer.headers["www-authenticate"].startswith("Basic ")
            else:
                assert 'action="/login"' in answer.text
            assert PASSWORD not in answer.text
    # And the login form and its stylesheet are all an anonymous request gets
    assert console.client.get("/login").status_code == 200
    assert console.client.get("/static/console.css").status_code == 200


def test_the_right_credentials_or_a_login_session_are_served(console: Console) -> None:
    # Given basic auth / Then the API and the pages are served
    assert console.client.get("/api/v1/runs", auth=AUTH).status_code == 200
    assert console.client.get("/runs", auth=AUTH).status_code == 200
    # Given the login form with a wrong password / Then 401 and no session
    wrong = console.client.post("/login", data={"user": USER, "password": "guess"})
    assert wrong.status_code == 401 and "wrong user or password" in wrong.text
    assert console.client.get("/runs").status_code == 401
    # When the right login is posted / Then it returns where it was asked to, logged in
    done = console.client.post(
        "/login",
        data={"user": USER, "password": PASSWORD, "next": "/workflows"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/workflows"
    assert PASSWORD not in done.headers.get("set-cookie", "")
    page = console.client.get("/workflows")
    assert page.status_code == 200 and "console_flaky" in page.text
    # And a login never sends anyone to another site
    away = console.client.post(
        "/login",
        data={"user": USER, "password": PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert away.headers["location"] == "/runs"
    # When the user logs out (with the page's CSRF token) / Then the session is gone
    token = re.search(r'name="csrf_token" value="(\w+)"', page.text)
    assert token is not None
    console.client.post("/logout", data={"csrf_token": token[1]})
    assert console.client.get("/runs").status_code == 401


def test_every_change_needs_the_csrf_token(console: Console, tmp_path: Path) -> None:
    # Given a failed run and its dead letter
    failed = console.start_flaky(tmp_path / "missing")
    [letter] = console.history.dead_letters()
    posts = [(m, p) for m, p in every_route(console.app) if m == "POST" and p != "/login"]
    targets = {"run_id": failed, "letter_id": str(letter.id)}
    assert len(posts) == 7  # control, start, replay (API and pages), logout
    for _, template in posts:
        path = template.replace(PATH_VALUES["run_id"], targets["run_id"])
        path = path.replace("/dead-letters/1/", f"/dead-letters/{letter.id}/")
        # When it is posted with basic auth but without the token, or a wrong one
        bare = console.client.post(path, auth=AUTH, data={"inputs": "{}"})
        wrong = console.client.post(path, auth=AUTH, headers={"X-CSRF-Token": "0" * 64})
        # Then it is refused with 403 and why
        for answer in (bare, wrong):
            assert answer.status_code == 403, (path, answer.status_code, answer.text)
            assert "CSRF" in answer.text
    # And nothing happened: no run was retried or started, the letter is not replayed
    assert len(console.history.find_runs(RunQuery())) == 1
    assert console.history.dead_letters() == [letter]


def test_actions_are_recorded_with_who_did_them(console: Console, tmp_path: Path) -> None:
    # Given a failed run
    marker = tmp_path / "marker"
    failed = console.start_flaky(marker)
    # When its cause is fixed and it is retried through the API
    marker.touch()
    done = console.post(f"/api/v1/runs/{failed}/retry").json()
    console.worker.run(lambda: False, 30)
    # Then the new run succeeded and the failed run's events say who retried it
    new = console.client.get(f"/api/v1/runs/{done['new_run_id']}", auth=AUTH).json()
    assert new["status"] == "succeeded" and new["parent_run_id"] == failed
    events = console.client.get(f"/api/v1/runs/{failed}", auth=AUTH).json()["events"]
    assert {"kind": "operator", "detail": f"retry by {USER}: retried as run {new['id']}"} in [
        {k: e[k] for k in ("kind", "detail")} for e in events
    ]
    # And a second retry or a pause of an ended run is a conflict, saying why
    paused = console.post(f"/api/v1/runs/{failed}/pause")
    assert paused.status_code == 409 and "only a pending or running run" in paused.json()["detail"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/v1/runs?status=done", "status 'done' is not a run status"),
        ("/api/v1/runs?since=yesterday", "since 'yesterday' is not an ISO 8601 time"),
        ("/api/v1/runs?until=2026-13-01", "until '2026-13-01' is not an ISO 8601 time"),
        ("/api/v1/runs?after=bm90LWEtY3Vyc29y", "is not a page cursor"),
        ("/api/v1/runs?limit=0", "limit 0 is out of range"),
        ("/api/v1/runs?limit=many", "limit 'many' is not a whole number"),
        ("/api/v1/charts?hours=-1", "hours -1 is out of range"),
        ("/api/v1/dead-letters/x/replay", "letter_id"),
        ("/runs?status=done", "status &#39;done&#39; is not a run status"),
        ("/charts?hours=soon", "hours &#39;soon&#39; is not a number"),
    ],
)
def test_a_malformed_request_is_400_with_the_reason(
    console: Console, path: str, reason: str
) -> None:
    post = path.endswith("/replay")
    answer = console.post(path) if post else console.client.get(path, auth=AUTH)
    assert answer.status_code == 400, answer.text
    assert reason in answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs/00000000-0000-4000-8000-000000000000",
        "/api/v1/runs/not-a-run-id",
        "/runs/00000000-0000-4000-8000-000000000000",
        "/runs/00000000-0000-4000-8000-000000000000/live",
        "/api/v1/workflows/nope",
        "/workflows/nope",
        "/nowhere",
    ],
)
def test_an_unknown_run_or_workflow_is_404(console: Console, path: str) -> None:
    answer = console.client.get(path, auth=AUTH)
    assert answer.status_code == 404
    if "/runs/" in path:
        assert "does not exist" in answer.text
    if not path.startswith("/api/"):
        assert "<h1>404 Not found</h1>" in answer.text


def test_an_unknown_dead_letter_is_404_and_a_replayed_one_409(
    console: Console, tmp_path: Path
) -> None:
    assert console.post("/api/v1/dead-letters/999/replay").status_code == 404
    console.start_flaky(tmp_path / "marker")
    [letter] = console.history.dead_letters()
    assert console.post(f"/api/v1/dead-letters/{letter.id}/replay").status_code == 200
    again = console.post(f"/api/v1/dead-letters/{letter.id}/replay")
    assert again.status_code == 409 and "already replayed" in again.json()["detail"]


def test_the_start_form_shows_what_is_wrong_and_starts_nothing(console: Console) -> None:
    form = {"csrf_token": console.csrf(), "idempotency_key": "", "correlation_id": ""}
    path = "/workflows/console_flaky/start"
    for inputs, reason in [
        ("{not json", "not started: Expecting property name"),
        ("[1, 2]", "inputs must be a JSON object"),
        ('{"nope": 1}', "cannot be called with the run&#39;s inputs"),
    ]:
        answer = console.client.post(path, auth=AUTH, data={**form, "inputs": inputs})
        assert answer.status_code == 400, inputs
        assert reason in answer.text
        assert 'name="inputs"' in answer.text  # the form again, with what was typed
    assert console.history.find_runs(RunQuery()) == []


def test_runs_are_found_by_search_and_paged(console: Console, tmp_path: Path) -> None:
    # Given five runs, one with a correlation id and one with an idempotency key
    ids = [console.start_flaky(tmp_path / "m") for _ in range(3)]
    ids.append(console.start_flaky(tmp_path / "m", correlation_id="order-7"))
    ids.append(console.start_flaky(tmp_path / "m", idempotency_key="nightly-1"))

    def listed(query: str) -> list[str]:
        found = console.client.get(f"/api/v1/runs?{query}", auth=AUTH).json()["runs"]
        return [r["id"] for r in found]

    # Then search finds a run by id prefix, correlation id or idempotency key
    assert listed(f"q={ids[1][:8]}") == [ids[1]]
    assert listed("q=order-7") == [ids[3]]
    assert listed("q=nightly-1") == [ids[4]]
    # And pages of two, newest first, together hold every run once
    seen, after = [], ""
    while True:
        page = console.client.get(f"/api/v1/runs?limit=2{after}", auth=AUTH).json()
        seen += [r["id"] for r in page["runs"]]
        if page["next"] is None:
            break
        after = f"&after={page['next']}"
    assert seen == list(reversed(ids))
    assert listed("status=failed&workflow=console_flaky") == list(reversed(ids))
    assert listed("status=succeeded") == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ui_env(auth: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_UI_AUTH"}
    env.update(PYTHONPATH=str(ROOT), ORCHESTRATOR_TASK_MODULES="tests.web.workload")
    if auth is not None:
        env["ORCHESTRATOR_UI_AUTH"] = auth
    return env


def test_orchestrator_ui_refuses_to_start_without_credentials() -> None:
    # Given no ORCHESTRATOR_UI_AUTH / When `orchestrator ui` is started
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(free_port())],
        env=ui_env(None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it exits with an error saying how to set it
    assert done.returncode == 1
    assert "the console refuses to start: ORCHESTRATOR_UI_AUTH is not set" in done.stderr
    assert "export ORCHESTRATOR_UI_AUTH=admin:$(openssl rand -hex 16)" in done.stderr


@pytest.mark.parametrize("auth", ["", "s3cret-without-user", "ops:", ":s3cret"])
def test_credentials_that_are_not_user_and_password_are_refused(auth: str) -> None:
    # Given a value that is not user:password / Then the console is not built, and the
    # error does not echo what it was given
    with pytest.raises(ConsoleRefused) as refused:
        Login.from_settings(Settings(ui_auth=SecretStr(auth)))
    assert "the console refuses to start" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_orchestrator_ui_serves_on_loopback_only_with_credentials() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
        env=ui_env(f"{USER}:{PASSWORD}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/v1/csrf"
        request = urllib.request.Request(url)
        request.add_header("Authorization", "Basic " + _basic(f"{USER}:{PASSWORD}"))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0].decode()
    assert PASSWORD not in output


def _basic(credentials: str) -> str:
    return base64.b64encode(credentials.encode()).decode()


def test_a_runs_items_and_child_runs_are_part_of_its_model(
    console: Console, tmp_path: Path
) -> None:
    # Given a run whose first step has item rows (a for_each) and started a child workflow
    run_id = console.start_flaky(tmp_path / "marker")
    items = [NewStep(f"needs[{i}]", "t", f"c{i}") for i in range(2)]
    console.history.add_steps(run_id, items)
    child = NewRun(
        id=str(uuid.uuid4()),
        workflow="console_flaky",
        version="v",
        spec={},
        inputs={},
        trigger="api",
        parent_run_id=run_id,
        parent_step_id="needs[1]",
    )
    console.history.create_run(child, [])
    # When the run is read / Then items follow their step and are not nodes of the DAG
    found = console.client.get(f"/api/v1/runs/{run_id}", auth=AUTH).json()
    assert [(s["step_id"], s["item_of"]) for s in found["steps"]] == [
        ("needs", None),
        ("needs[0]", "needs"),
        ("needs[1]", "needs"),
        ("check", None),
    ]
    page = console.client.get(f"/runs/{run_id}", auth=AUTH).text
    assert page.count('<rect class="node"') == 2
    # And the child run is listed, and knows the step that started it
    assert [c["id"] for c in found["children"]] == [child.id]
    assert "Child runs" in page and child.id in page
    child_page = console.client.get(f"/runs/{child.id}", auth=AUTH).text
    assert "child of" in child_page and "step needs[1]" in child_page
