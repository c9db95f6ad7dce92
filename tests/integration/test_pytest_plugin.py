"""The pytest plugin as a project loads it: a test suite of its own against a real worker."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
pytest_plugins = ["pytester"]

TASKS = """
import os

from orchestrator import current_run, task


@task
def double(x: int, **kwargs) -> dict:
    return {"value": 2 * x, "pid": os.getpid()}


@task
def fail(*args, **kwargs) -> None:
    raise ValueError(f"step {current_run.step_id} says no")
"""

TESTS = """
import os

import pytest

from orchestrator import Workflow, WorkflowFailed, run_workflow
import plugin_tasks


def test_a_step_runs_in_the_worker(orchestrator_worker, orchestrator_app, orchestrator_cluster):
    wf = Workflow("plugin-double").step("d", plugin_tasks.double, kwargs={"x": 21})
    output = run_workflow(wf).wait(timeout=60)
    assert output["value"] == 42
    assert output["pid"] in orchestrator_worker.pool()
    assert orchestrator_app.conf.broker_url == orchestrator_cluster.broker_url
    assert os.environ["ORCHESTRATOR_TASK_MODULES"] == "plugin_tasks"
    with open("cluster-root.txt", "w") as out:
        out.write(str(orchestrator_cluster.root))


def test_a_failed_step_fails_its_run(orchestrator_worker):
    wf = Workflow("plugin-fail").step("no", plugin_tasks.fail)
    with pytest.raises(WorkflowFailed, match="says no"):
        run_workflow(wf).wait(timeout=60)


def test_another_worker_and_a_replacement(orchestrator_cluster, orchestrator_worker):
    extra = orchestrator_cluster.start_worker("extra", concurrency=1)
    extra.kill()
    again = orchestrator_cluster.replace(extra)
    assert again.running and not extra.running and extra.died() is None
    wf = Workflow("plugin-again").step("d", plugin_tasks.double, kwargs={"x": 1})
    assert run_workflow(wf).wait(timeout=60)["value"] == 2
"""


def test_the_fixtures_run_workflows_on_a_real_worker(pytester: pytest.Pytester) -> None:
    """Given a project with task modules named in its ini file, when its tests use the
    plugin's fixtures, then their workflows run in a real worker of a cluster of their own,
    and nothing of the cluster is left once the session ends."""
    pytester.makepyfile(plugin_tasks=TASKS, test_flows=TESTS)
    pytester.makeini("[pytest]\norchestrator_task_modules = plugin_tasks\n")

    result = pytester.runpytest_subprocess("-p", "orchestrator.testing.pytest_plugin", "-q")

    result.assert_outcomes(passed=3)
    root = Path(pytester.path / "cluster-root.txt").read_text()
    assert root and not Path(root).exists()
