"""Flower with ``config/flowerconfig.py``, or the plain command without it from any directory:
credentials required, loopback only, a run's tasks found by run id.

A real worker and a real Flower process; the browser is Debian's chromium driven by Playwright
(``scripts/install-ci-tools.sh`` installs it). The screenshot is left in ``artifacts/``.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import run_workflow

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "artifacts" / "flower-tasks.png"
AUTH_VAR = "ORCHESTRATOR_FLOWER_BASIC_AUTH"


def flower_command(port: int, conf: bool = True) -> list[str]:
    """``celery -A orchestrator.worker flower``, with our config file or the plain command."""
    args = "-m celery -A orchestrator.worker flower"
    args += " --conf=config/flowerconfig.py" if conf else ""
    return [sys.executable, *args.split(), f"--port={port}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, credentials: str | None = None) -> tuple[int, str]:
    """Status and body of a GET, with HTTP basic auth when ``credentials`` are given."""
    request = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(credentials.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Flower:
    """A ``celery flower`` subprocess on a free port with generated credentials."""

    def __init__(self, env: dict[str, str], log: Path, conf: bool = True, cwd: Path = ROOT) -> None:
        self.credentials = f"admin:{secrets.token_hex(16)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                flower_command(self.port, conf),
                cwd=cwd,
                env={**env, AUTH_VAR: self.credentials},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def await_worker_events(self, timeout: float = 60.0) -> None:
        """Wait until Flower has seen a worker heartbeat: its event receiver is live."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                status, body = get(f"{self.url}/metrics", self.credentials)
            except OSError:
                status, body = 0, ""
            if status == 200 and re.search(r"^flower_worker_online\{.*\} 1\.0$", body, re.M):
                return
            time.sleep(0.5)
        raise RuntimeError(f"Flower did not see the worker:\n{self.log.read_text()[-3000:]}")

    def await_serving(self, timeout: float = 60.0) -> None:
        """Wait until Flower answers HTTP."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                get(self.url + "/healthcheck")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"Flower did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture(scope="module")
def flower(
    servers: dict[str, str], worker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flower]:
    """Flower started before any run of this module, so it receives all of their task events."""
    env = {**os.environ, **servers, "PYTHONPATH": str(ROOT)}
    process = Flower(env, tmp_path_factory.mktemp("flower") / "flower.log")
    try:
        process.await_worker_events()
        yield process
    finally:
        process.stop()


@pytest.fixture
def plain_flower(servers: dict[str, str], tmp_path: Path) -> Iterator[Flower]:
    """The plain ``celery -A orchestrator.worker flower``: no --conf, from another directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, **servers, "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("FLOWER_")}
    process = Flower(env, tmp_path / "flower.log", conf=False, cwd=elsewhere)
    try:
        process.await_serving()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def finished_run(flower: Flower) -> Any:
    """A completed run of the example ETL workflow (six steps)."""
    run = run_workflow("etl", {"source": "s3://bucket/day"})
    run.wait(timeout=60)
    return run


def test_every_page_and_api_needs_the_credentials(flower: Flower) -> None:
    # Given Flower started with generated credentials
    wrong = "admin:" + secrets.token_hex(16)
    for path in ("/", "/tasks", "/api/workers", "/api/tasks"):
        # When a page or API is requested without or with wrong credentials / Then 401
        assert get(flower.url + path)[0] == 401, path
        assert get(flower.url + path, wrong)[0] == 401, path
        # And with the right ones it is served
        assert get(flower.url + path, flower.credentials)[0] == 200, path


def test_flower_listens_on_loopback_only(flower: Flower) -> None:
    # Given Flower bound by the config / When reached on another address than 127.0.0.1
    # Then nothing answers (a socket bound to every interface would accept 127.0.0.2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", flower.port), timeout=5).close()


def test_the_plain_command_elsewhere_needs_credentials_and_listens_on_loopback_only(
    plain_flower: Flower,
) -> None:
    # Given Flower started without --conf, where no flowerconfig.py is
    wrong = "admin:" + secrets.token_hex(16)
    for path in ("/", "/tasks", "/api/workers"):
        # When a page or API is requested without or with wrong credentials / Then 401
        assert get(plain_flower.url + path)[0] == 401, path
        assert get(plain_flower.url + path, wrong)[0] == 401, path
        # And with the right ones it is served
        assert get(plain_flower.url + path, plain_flower.credentials)[0] == 200, path
    # And nothing answers on another address than 127.0.0.1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", plain_flower.port), timeout=5).close()


def test_browser_finds_a_runs_tasks_by_run_id(flower: Flower, finished_run: Any) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing; scripts/install-ci-tools.sh installs it")
    from playwright.sync_api import expect, sync_playwright

    steps = finished_run.steps()
    user, _, password = flower.credentials.partition(":")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(
                http_credentials={"username": user, "password": password},
                viewport={"width": 1800, "height": 900},
            )
            page = context.new_page()
            # Given the tasks page / When the run id is typed into its search box
            page.goto(f"{flower.url}/tasks")
            page.locator("#tasks-table_filter input").fill(finished_run.id)
            # Then exactly the run's step tasks are listed, each with its name and run id
            rows = page.locator("#tasks-table tbody tr[id]")
            expect(rows).to_have_count(len(steps), timeout=15_000)
            for step in steps:
                row = page.locator(f'#tasks-table tbody tr[id="{step.celery_task_id}"]')
                expect(row).to_contain_text(step.task)
                expect(row).to_contain_text(finished_run.id)
                expect(row).to_contain_text(f"'step_id': '{step.step_id}'")
                expect(row).to_contain_text("SUCCESS")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            # And a step's own page (the `orchestrator show` link) shows its run and step ids
            page.goto(f"{flower.url}/task/{steps[0].celery_task_id}")
            expect(page.locator("body")).to_contain_text(finished_run.id)
            expect(page.locator("body")).to_contain_text(f"'step_id': '{steps[0].step_id}'")
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 0


@pytest.mark.parametrize("conf", [True, False], ids=["conf", "plain-elsewhere"])
@pytest.mark.parametrize("value", [None, "s3cret-without-user", "admin:"])
def test_flower_refuses_to_start_without_credentials(
    servers: dict[str, str], value: str | None, conf: bool, tmp_path: Path
) -> None:
    # Given no credentials, or a value that is not user:password
    env = {k: v for k, v in os.environ.items() if k != AUTH_VAR}
    env.update(servers, PYTHONPATH=str(ROOT))
    if value is not None:
        env[AUTH_VAR] = value
    # When Flower is started with our config, or plainly from a directory without one
    done = subprocess.run(
        flower_command(free_port(), conf),
        cwd=ROOT if conf else tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it exits with an error saying how to set them, without echoing what it was given
    assert done.returncode != 0
    assert "Flower refuses to start" in done.stderr
    assert f"export {AUTH_VAR}=admin:$(openssl rand -hex 16)" in done.stderr
    assert "s3cret" not in done.stdout + done.stderr
