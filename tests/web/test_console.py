"""The console in a real browser, on real servers and a real worker: find a run and watch its
DAG turn green live, open a failed step's traceback, retry the run from the page, replay a dead
letter, start a run from a workflow's form. The screenshots in the README are taken here
(``docs/screenshots/``), so they show the console as it is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import get_run, run_workflow
from orchestrator.app import default_services
from orchestrator.core.graph_layout import style_of
from orchestrator.errors import WorkflowFailed
from orchestrator.records import DeadLetterRecord
from tests.web.conftest import SCREENSHOTS, Served

pytestmark = pytest.mark.integration

GREEN = style_of("succeeded").fill
FLOWER = "http://127.0.0.1:5555"  # ORCHESTRATOR_FLOWER_URL's default


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def failed_run(marker: Path) -> str:
    """A run of console_flaky that failed (its marker file is missing); its id."""
    run = run_workflow("console_flaky", {"marker": str(marker)})
    with pytest.raises(WorkflowFailed):
        run.wait(timeout=60)
    return run.id


def dead_letter_of(run_id: str, timeout: float = 15.0) -> DeadLetterRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for d in default_services().history.dead_letters() if d.run_id == run_id]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no dead letter for run {run_id}")


def test_find_a_run_and_watch_its_dag_turn_green(
    page: Any, console: Served, tmp_path: Path
) -> None:
    # Given a run held at its first step until a file exists
    gate = tmp_path / "gate"
    run = run_workflow("console_gated", {"gate": str(gate)}, correlation_id="web-gated")
    # When the user searches the runs by its correlation id and opens it
    page.goto(console.url + "/runs")
    page.fill("input[name=q]", "web-gated")
    page.click("form.filters button[type=submit]")
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(1)
    rows.locator(f'a[href="/runs/{run.id}"]').click()
    # Then its DAG shows four steps, not all succeeded, while the run goes on
    nodes = page.locator("section.dag rect.node")
    expect(nodes).to_have_count(4)
    expect(page.locator(".live")).to_be_visible()
    assert page.locator(f'section.dag rect.node[fill="{GREEN}"]').count() < 4
    page.evaluate("window.stayed = true")
    # When the first step is let through / Then every step turns green on the same page
    gate.touch()
    expect(page.locator(f'section.dag rect.node[fill="{GREEN}"]')).to_have_count(4)
    expect(page.locator("#run-status")).to_have_text("succeeded")
    assert page.evaluate("window.stayed") is True, "the page was reloaded"
    expect(page.locator("table.steps tr[data-step=join] td").nth(2)).to_have_text("succeeded")
    page.screenshot(path=str(SCREENSHOTS / "run.png"), full_page=True)


def test_open_a_failed_steps_traceback_and_retry_the_run(
    page: Any, console: Served, tmp_path: Path
) -> None:
    # Given a run failed at its first step
    marker = tmp_path / "marker"
    run_id = failed_run(marker)
    page.goto(f"{console.url}/runs/{run_id}")
    expect(page.locator("#run-status")).to_have_text("failed")
    # When the user opens the failed step's traceback
    traceback = page.locator("details.traceback[data-step=needs]")
    traceback.locator("summary").click()
    # Then it shows where the step failed, and the step links to its task in Flower
    expect(traceback.locator("pre")).to_be_visible()
    expect(traceback.locator("pre")).to_contain_text("FileNotFoundError")
    expect(traceback.locator("pre")).to_contain_text("workload.py")
    [needs] = [s for s in get_run(run_id).steps() if s.step_id == "needs"]
    flower = page.locator("table.steps tr[data-step=needs] a")
    expect(flower).to_have_attribute("href", f"{FLOWER}/task/{needs.celery_task_id}")
    page.screenshot(path=str(SCREENSHOTS / "run-failed.png"), full_page=True)
    # When the cause is fixed and the user retries the run from the page
    marker.touch()
    page.click("button.retry")
    # Then the new run's page is shown, and it succeeds
    expect(page.locator("#run-status")).to_have_text("succeeded")
    assert run_id not in page.url
    expect(page.locator(".facts")).to_contain_text(run_id)  # retry of
    # And the failed run's events say who retried it
    page.goto(f"{console.url}/runs/{run_id}")
    expect(page.locator("table.events")).to_contain_text("retry by ops: retried as run")


def test_replay_a_dead_letter(page: Any, console: Served, tmp_path: Path) -> None:
    # Given a failed run's dead letter, and its cause fixed
    marker = tmp_path / "marker"
    run_id = failed_run(marker)
    letter = dead_letter_of(run_id)
    marker.touch()
    # When the user replays it from the dead letters page
    page.goto(console.url + "/dead-letters")
    row = page.locator(f"tr[data-letter='{letter.id}']")
    expect(row).to_contain_text("FileNotFoundError")
    page.screenshot(path=str(SCREENSHOTS / "dead-letters.png"))
    row.locator("button").click()
    # Then the run it retried succeeds, and the letter is marked replayed
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator(".facts")).to_contain_text(run_id)
    page.goto(console.url + "/dead-letters?all=true")
    expect(page.locator(f"tr[data-letter='{letter.id}']")).to_contain_text("replayed")


def test_start_a_run_from_the_workflow_form(page: Any, console: Served, tmp_path: Path) -> None:
    # Given the workflow's page, with its DAG and the inputs its first step takes
    gate = tmp_path / "open"
    gate.touch()
    page.goto(console.url + "/workflows/console_gated")
    expect(page.locator("section.dag rect.node")).to_have_count(4)
    expect(page.locator("main")).to_contain_text("gate (required)")
    # When inputs that the first step cannot take are submitted
    page.fill("textarea[name=inputs]", '{"gates": "x"}')
    page.click("form.start button")
    # Then the form says why, and nothing is started
    expect(page.locator("p.error")).to_contain_text("cannot be called with the run's inputs")
    # When the right inputs are submitted / Then the new run's page shows it succeed
    page.fill("textarea[name=inputs]", f'{{"gate": "{gate}"}}')
    page.fill("input[name=correlation_id]", "from-the-form")
    page.screenshot(path=str(SCREENSHOTS / "workflow.png"), full_page=True)
    page.click("form.start button")
    expect(page.locator("#run-status")).to_have_text("succeeded")
    expect(page.locator(".facts")).to_contain_text("from-the-form")
    expect(page.locator("table.events")).to_contain_text("started by ops")
    # And the charts count it
    page.goto(console.url + "/charts?hours=1")
    expect(page.locator("figure.chart svg")).to_have_count(3)
    page.screenshot(path=str(SCREENSHOTS / "charts.png"), full_page=True)
    # And the workers page shows the worker, as Celery's inspect reports it
    page.goto(console.url + "/workers")
    expect(page.locator("main table")).to_contain_text("web0@")
    # And the runs page lists every run of the module, newest first
    page.goto(console.url + "/runs")
    expect(page.locator("table.runs tbody tr").first).to_contain_text("console_gated")
    page.screenshot(path=str(SCREENSHOTS / "runs.png"))
