"""The console against real servers, for the browser tests: Redis, PostgreSQL and a worker
(``orchestrator.testing.Cluster``), ``orchestrator ui`` as a process of its own, and Debian's
Chromium driven by Playwright (``scripts/install-ci-tools.sh`` installs it; no browser is
downloaded). Without Chromium the browser tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.testing.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
USER = "ops"


@dataclass(frozen=True)
class Served:
    """``orchestrator ui`` running: where, with which login, its log."""

    url: str
    password: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Servers and one worker that imports this package's workload."""
    env = {
        "ORCHESTRATOR_TASK_MODULES": "tests.web.workload",
        "ORCHESTRATOR_WORKFLOWS_PATH": str(ROOT / "config" / "workflows"),
    }
    with Cluster(env=env, name="orchestrator-web") as running:
        running.start_worker("web", concurrency=2)
        yield running


@pytest.fixture(scope="module")
def console(cluster: Cluster) -> Iterator[Served]:
    """``orchestrator ui`` on a free port with a generated password, on the cluster's servers."""
    password, port = secrets.token_hex(12), free_port()
    log = cluster.root / "console.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORCHESTRATOR_UI_AUTH": f"{USER}:{password}"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "ui", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", password, log)
    try:
        _await_serving(served, proc)
        yield served
    finally:
        proc.terminate()
        proc.wait(30)
    assert password not in log.read_text(), "the console logged its password"


def _await_serving(served: Served, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(served.url + "/login", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the console did not start:\n{served.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; scripts/install-ci-tools.sh installs it")
        pytest.skip(f"{CHROMIUM} is missing; scripts/install-ci-tools.sh installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, console: Served) -> Iterator[Any]:
    """A browser tab logged in to the console through its login form."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    # Given a page of the console asked for without a login / Then the login form is shown
    tab.goto(console.url + "/runs")
    expect(tab.locator("form.card h1")).to_have_text("orchestrator console")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # When the user logs in / Then the page asked for is shown
    tab.fill("input[name=user]", USER)
    tab.fill("input[name=password]", console.password)
    tab.click("button[type=submit]")
    expect(tab.locator("h1")).to_have_text("Runs")
    expect(tab.locator(".who")).to_have_text(USER)
    try:
        yield tab
    finally:
        context.close()
