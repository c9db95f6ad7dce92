"""A newcomer's first hour with the CLI (issue 15), against real servers and workers.

A worker without a task module, a workflows folder with one bad file among good ones, ``show``
with inputs, output, attempts and tracebacks, run ids by prefix, and servers that are away or a
pipe that closes: each answered in a line or two that say what to do, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Workflow, get_run, run_workflow
from orchestrator.app import default_services, reset_default_app
from orchestrator.cli import main
from orchestrator.core import registry
from orchestrator.errors import WorkflowFailed
from orchestrator.records import NewRun, NewStep
from orchestrator.settings import get_settings
from orchestrator.testing.cluster import Cluster
from tests.integration import workload

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DOUBLE = "tests.integration.workload.double"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def run_id_in(err: str) -> str:
    """The run id ``orchestrator run --wait`` announces."""
    found = re.search(r"^run (\S+) of ", err, re.MULTILINE)
    assert found, err
    return found[1]


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """This process with ``values`` in its environment (orchestrator re-reads it), then as
    before."""
    saved = dict(os.environ)
    os.environ.update(values)
    reset_default_app()
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        reset_default_app()
        get_settings.cache_clear()


# -- a worker without the task module ------------------------------------------------------------


def test_a_worker_without_the_task_module_is_named_within_seconds(
    start_worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a worker on queue fh-bare whose ORCHESTRATOR_TASK_MODULES lacks the workload module
    bare = start_worker("bare", 1, {"ORCHESTRATOR_TASK_MODULES": "tasks"}, ("-Q", "fh-bare"))
    Workflow("fh_bare").step("hello", workload.double, queue="fh-bare")
    Workflow("fh_nobody").step("hello", workload.double, queue="fh-nobody")

    # When the CLI (which has the module) runs a workflow whose step goes to that queue
    began = time.monotonic()
    code, out, err = cli(capsys, "run", "fh_bare", "-i", "n=2", "--wait")

    # Then nothing is submitted: the error names the step, task, queue, worker and the fix
    assert code == 1 and out == "" and time.monotonic() - began < 3, err
    assert f"step 'hello': task {DOUBLE!r} on queue 'fh-bare'" in err
    assert bare.name in err and "ORCHESTRATOR_TASK_MODULES" in err
    assert "nothing was submitted" in err and "Traceback" not in err

    # When a run is submitted anyway (from Python, which does not ask the workers)
    began = time.monotonic()
    run = run_workflow("fh_bare", {"n": 2})
    with pytest.raises(WorkflowFailed) as failed:
        run.wait(timeout=30)
    took = time.monotonic() - began

    # Then it fails within seconds, naming the task, the worker and the queue
    assert took < 5, took
    assert f"task {DOUBLE!r} is not registered on worker {bare.name}" in str(failed.value)
    assert "queue 'fh-bare'" in str(failed.value)
    # And its dead letter names the run and the step
    [letter] = [d for d in default_services().history.dead_letters() if d.run_id == run.id]
    assert (letter.step_id, letter.reason, letter.task) == ("hello", "unregistered", DOUBLE)
    code, out, _ = cli(capsys, "dlq", "list")
    assert run.id in out and "hello" in out and "unregistered" in out

    # When a step waits on a queue no live worker consumes
    code, out, err = cli(capsys, "run", "fh_nobody", "-i", "n=2", "--wait", "--timeout", "1.5")

    # Then run --wait says so (noted at submit, then in the progress), and show names it too
    assert code == 1 and "is still pending after 1.5s" in err
    expected = f"hello waits for queue: task {DOUBLE!r} on queue 'fh-nobody': no live worker"
    assert "note: workflow 'fh_nobody', step 'hello'" in err and expected in err, err
    run_id = run_id_in(err)
    code, out, _ = cli(capsys, "show", run_id)
    assert f"hello: queue: task {DOUBLE!r} on queue 'fh-nobody'" in out
    data = json.loads(cli(capsys, "show", run_id, "--json")[1])
    assert data["steps"][0]["waiting_for"] == "queue"
    assert "no live worker consumes this queue" in data["steps"][0]["waiting_detail"]
    # And `orchestrator workers` lists the bare worker with its queue and without the task
    listed = json.loads(cli(capsys, "workers", "--json")[1])
    mine = next(w for w in listed if w["name"].startswith(f"{bare.name}@"))
    assert mine["queues"] == ["fh-bare"] and DOUBLE not in mine["tasks"]
    assert cli(capsys, "cancel", run_id)[0] == 0


# -- a workflows folder with one bad file --------------------------------------------------------

BAD_FILES = {
    "cycle.yaml": "name: loop\nsteps: [{id: a, task: tasks.etl.extract, after: [b]},"
    " {id: b, task: tasks.etl.clean, after: [a]}]\n",
    "keys.yaml": "name: keys\nsteps:\n  - {id: a, task: tasks.etl.extract}\n"
    "  - {id: b, task: tasks.etl.clean, depends_on: [a]}\n",
    "typo.yaml": "name: typo\nsteps: [{id: a, task: tasks.etl.extrat}]\n",
}
GOOD = f"name: fh_good\nsteps: [{{id: a, task: {DOUBLE}, queue: fh-wf}}]\n"


@pytest.fixture
def workflows(tmp_path: Path) -> Path:
    """etl.yaml, a good workflow on a queue of its own, and three bad files."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    shutil.copy(ROOT / "config" / "workflows" / "etl.yaml", folder / "etl.yaml")
    (folder / "good.yaml").write_text(GOOD)
    for name, text in BAD_FILES.items():
        (folder / name).write_text(text)
    return folder


def test_one_bad_workflow_file_is_reported_and_skipped(
    workflows: Path,
    start_worker: Any,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # When `validate` runs with no path, ORCHESTRATOR_WORKFLOWS_PATH naming the folder
    with environ(ORCHESTRATOR_WORKFLOWS_PATH=str(workflows)):
        code, out, err = cli(capsys, "validate")

    # Then each file is reported on its own line: the bad ones with workflow, step and reason
    assert code == 1 and f"ORCHESTRATOR_WORKFLOWS_PATH={workflows}" in err
    lines = {Path(line.split()[1].rstrip(":")).name: line for line in out.splitlines()}
    assert lines["etl.yaml"].startswith("ok ") and lines["good.yaml"].startswith("ok ")
    assert "workflow 'loop', step 'a': dependency cycle a -> b -> a" in lines["cycle.yaml"]
    assert "step 'b': unknown key 'depends_on' (did you mean 'after'?)" in lines["keys.yaml"]
    assert (
        "'tasks.etl.extrat' is not registered (did you mean 'tasks.etl.extract'?)"
        in (lines["typo.yaml"])
    )
    assert "Traceback" not in out + err and "pydantic" not in out

    # When a worker starts with that folder
    worker = start_worker("folder", 1, {"ORCHESTRATOR_WORKFLOWS_PATH": str(workflows)})

    # Then it starts, its log names the skipped files, and the good workflows run on it
    log = worker.output()
    assert "cycle.yaml skipped: workflow 'loop', step 'a': dependency cycle" in log
    assert "keys.yaml skipped" in log and "Traceback" not in log
    with environ(ORCHESTRATOR_WORKFLOWS_PATH=str(workflows)):
        code, out, err = cli(capsys, "run", "fh_good", "-i", "n=21", "--wait")
        assert (code, json.loads(out)) == (0, 42), err
        # And the CLI warns about the skipped files too (`warning: …` on its stderr)
        skipped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any("cycle.yaml skipped: workflow 'loop', step 'a'" in m for m in skipped)
        code, out, err = cli(capsys, "run", "loop")
        assert code == 1 and "workflow 'loop' is not registered" in err
    # (it consumes the default queue with other workflows: it must not outlive this test)
    assert worker.stop() == 0


# -- orchestrator show, run --wait ---------------------------------------------------------------


def test_show_has_inputs_output_attempts_and_tracebacks(
    worker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a workflow whose first step retries once, then a step that fails, and one after it
    key = uuid.uuid4().hex
    wf = Workflow("fh_show").step("flaky", workload.flaky, kwargs={"succeed_on": 2})
    wf.step("boom", workload.boom, after="flaky").step("never", workload.noop, after="boom")

    # When it runs with --wait
    code, out, err = cli(capsys, "run", "fh_show", "-i", f"key={key}", "--wait")

    # Then the progress shows the retrying step and when its next attempt is due
    assert code == 1 and "flaky retrying: attempt 2 at " in err, err
    assert "after ConnectionError: attempt 1 failed" in err
    run_id = run_id_in(err)

    # And show has the inputs, each attempt with times and error, and the failed traceback
    code, out, _ = cli(capsys, "show", run_id[:12])
    assert code == 0
    assert f'inputs  {{"key": "{key}"}}' in out and "error at boom: ValueError" in out
    assert "flaky #1  retrying" in out and "flaky #2  succeeded" in out
    assert "ConnectionError: attempt 1 failed" in out and "boom #1" in out
    assert "traceback of boom, attempt 1 (failed)" in out and 'raise ValueError(f"boom' in out
    # And Flower links only for the steps a worker executed
    links = [line for line in out.splitlines() if "/task/" in line]
    assert len(links) == 2 and not any(line.startswith("never") for line in links)

    # When its retry carries the succeeded step over / Then that step has no Flower link either
    retried = get_run(run_id).retry()
    with pytest.raises(WorkflowFailed):
        retried.wait(timeout=30)
    data = json.loads(cli(capsys, "show", retried.id, "--json")[1])
    links = {s["step_id"]: s["flower"] for s in data["steps"]}
    assert links["flaky"] is None and links["boom"] is not None and links["never"] is None


def test_a_long_output_is_shortened_unless_full(worker: Any, capsys: Any) -> None:
    Workflow("fh_long").step("a", workload.type_names, kwargs={"value": {"pad": "x" * 2000}})
    code, _, err = cli(capsys, "run", "fh_long", "--wait")
    assert code == 0, err
    run_id = run_id_in(err)
    short = cli(capsys, "show", run_id)[1]
    full = cli(capsys, "show", run_id, "--full")[1]
    assert "--full shows all" in short and "x" * 2000 not in short and "x" * 2000 in full


# -- run ids by prefix ---------------------------------------------------------------------------


def _recorded_run(prefix: str) -> str:
    """A run recorded (not published) whose id starts with ``prefix``."""
    spec = registry.get("etl")
    run_id = prefix + str(uuid.uuid4())[len(prefix) :]
    default_services().history.create_run(
        NewRun(run_id, "etl", spec.version, spec.model_dump(mode="json"), {}, "cli"),
        [NewStep(s.id, s.task, str(uuid.uuid4())) for s in spec.steps],
    )
    return run_id


def test_a_run_is_found_by_a_unique_prefix(servers: Any, capsys: Any) -> None:
    # Given two runs whose ids share their first 7 characters
    default_services().load_modules()
    shared = uuid.uuid4().hex[:7]
    first, second = _recorded_run(shared + "a"), _recorded_run(shared + "b")

    # When a command is given the shared prefix / Then it lists both and changes nothing
    code, out, err = cli(capsys, "cancel", shared)
    assert code == 1 and f"run id prefix {shared!r} is ambiguous" in err
    assert first in err and second in err and "give more characters" in err

    # When given a prefix only one of them has / Then every command takes it
    assert cli(capsys, "show", shared + "a")[1].startswith(f"run {first} ")
    assert f"run {second} cancelled" in cli(capsys, "cancel", shared + "b")[1]
    assert cli(capsys, "graph", "etl", "-f", "mermaid", "--run", shared + "b")[0] == 0
    assert get_run(first[:13]).id == first  # the Python API too, hyphen included
    code, _, err = cli(capsys, "show", "0" * 7 + "z")
    assert code == 1 and "does not exist" in err
    assert cli(capsys, "cancel", first[:9])[0] == 0  # never published: no one runs it


# -- servers away, bad input, closed pipes -------------------------------------------------------


def test_a_server_away_is_one_line_never_a_traceback(cluster: Cluster, capsys: Any) -> None:
    nowhere = "redis://127.0.0.1:9/0"
    missing = cluster.database_url.rsplit("/", 1)[0] + "/fh_missing_database"
    with environ(ORCHESTRATOR_REDIS_URL=nowhere, ORCHESTRATOR_BROKER_URL=nowhere):
        for argv in (["breakers"], ["workers"], ["run", "etl", "-i", "source=x"]):
            code, out, err = cli(capsys, *argv)
            assert code == 1 and err.startswith(f"error: cannot reach Redis at {nowhere}"), err
            assert err.count("\n") == 1 and "Traceback" not in err
    with environ(ORCHESTRATOR_DATABASE_URL=missing):
        code, _, err = cli(capsys, "runs")
        assert code == 1 and 'database "fh_missing_database" does not exist' in err
        assert "source .orchestrator/env" in err and err.count("\n") == 1


def test_a_closed_pipe_ends_the_command_quietly(servers: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "runs", "-n", "500"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -0` would
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_validate_follows_child_workflows(
    tmp_path: Path, servers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a parent whose child is in a later file, one naming an unknown child, and a loop
    (tmp_path / "a_parent.yaml").write_text(
        "name: fh_parent\nsteps:\n  - {id: one, workflow: fh_zchild}\n"
    )
    (tmp_path / "b_missing.yaml").write_text(
        "name: fh_orphan\nsteps:\n  - {id: one, workflow: fh_nowhere}\n"
    )
    (tmp_path / "c_loop.yaml").write_text(
        "name: fh_loop\nsteps:\n  - {id: one, workflow: fh_loop}\n"
    )
    (tmp_path / "z_child.yaml").write_text(
        "name: fh_zchild\nsteps:\n  - {id: one, task: tasks.etl.extract}\n"
    )

    code, out, _ = cli(capsys, "validate", str(tmp_path))

    lines = {Path(line.split()[1].rstrip(":")).name: line for line in out.splitlines()}
    assert code == 1 and lines["a_parent.yaml"].startswith("ok ")
    assert "runs workflow 'fh_nowhere', which is not registered" in lines["b_missing.yaml"]
    assert "fh_loop -> fh_loop" in lines["c_loop.yaml"]
