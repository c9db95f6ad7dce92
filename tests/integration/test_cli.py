"""The ``orchestrator`` command: each command's output, against real servers and a worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.cli import main

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_explains_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in (
        "run",
        "runs",
        "show",
        "cancel",
        "pause",
        "resume",
        "retry",
        "graph",
        "validate",
        "db",
        "breakers",
        "dlq",
    ):
        assert f"\n    {command} " in out


def test_run_wait_prints_progress_and_output(worker: Any, capsys: Any) -> None:
    code, out, err = _run(
        capsys, "run", "etl", "--input", "source=s3://cli", "-i", "rows=50", "--wait"
    )
    assert code == 0
    assert json.loads(out).startswith("loaded ")
    assert "6 steps" in err and "[6/6] succeeded" in err


def test_runs_lists_with_filters_and_json(worker: Any, capsys: Any) -> None:
    _run(capsys, "run", "etl", "-i", "source=s3://list", "--wait")
    code, out, _ = _run(capsys, "runs", "--workflow", "etl", "--status", "succeeded")
    assert code == 0 and out.splitlines()[0].split()[:4] == ["RUN", "WORKFLOW", "STATUS", "TRIGGER"]
    assert " etl " in out and "succeeded" in out and "cli" in out
    code, out, _ = _run(capsys, "runs", "-w", "etl", "-n", "1", "--json")
    [row] = json.loads(out)
    assert row["workflow"] == "etl" and row["status"] == "succeeded"


def test_show_prints_steps_links_and_the_dag(worker: Any, capsys: Any) -> None:
    _run(capsys, "run", "etl", "-i", "source=s3://show", "--wait")
    run_id = json.loads(_run(capsys, "runs", "-n", "1", "--json")[1])[0]["id"]
    code, out, _ = _run(capsys, "show", run_id)
    assert code == 0 and f"run {run_id}" in out and "succeeded" in out
    assert "http://127.0.0.1:5555/task/" in out
    assert "✓ load" in out and "← clean, stats" in out
    data = json.loads(_run(capsys, "show", run_id, "--json")[1])
    assert [s["step_id"] for s in data["steps"]] == [
        "extract",
        "clean",
        "stats",
        "validate",
        "load",
        "report",
    ]


def test_unknown_run_is_a_one_line_error(servers: Any, capsys: Any) -> None:
    code, out, err = _run(capsys, "show", "00000000-0000-0000-0000-000000000000")
    assert code == 1 and out == ""
    assert err.startswith("error: run '00000000-0000-0000-0000-000000000000' does not exist")


@pytest.mark.parametrize("fmt", ["mermaid", "dot", "svg", "png"])
def test_graph_of_the_example_workflow(fmt: str, servers: Any, tmp_path: Path, capsys: Any) -> None:
    target = tmp_path / f"etl.{fmt}"
    code, _, err = _run(capsys, "graph", "etl", "--format", fmt, "-o", str(target))
    assert code == 0 and "6 steps" in err
    if fmt == "png":
        with Image.open(target) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100
        artifacts = ROOT / "artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "etl-graph.png").write_bytes(target.read_bytes())
        return
    text = target.read_text()
    assert all(step in text for step in ("extract", "clean", "stats", "load", "report"))
    if fmt == "svg":
        assert text.lstrip().startswith(("<?xml", "<svg"))


def test_graph_is_coloured_by_a_runs_status(worker: Any, capsys: Any) -> None:
    _run(capsys, "run", "etl", "-i", "source=s3://colour", "--wait")
    run_id = json.loads(_run(capsys, "runs", "-n", "1", "--json")[1])[0]["id"]
    code, out, _ = _run(capsys, "graph", "etl", "--format", "mermaid", "--run", run_id)
    assert code == 0 and ":::succeeded" in out


def test_validate_reports_each_file(servers: Any, tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsteps:\n  - {id: a, task: tasks.etl.extract, after: [zz]}\n")
    code, out, _ = _run(capsys, "validate", str(ROOT / "config" / "workflows"))
    assert code == 0 and "ok" in out and "etl (6 steps)" in out
    code, out, _ = _run(capsys, "validate", str(bad), "--json")
    [result] = json.loads(out)
    assert code == 1 and not result["ok"] and "'zz'" in result["error"]


def test_breakers_and_dlq_list_as_json(servers: Any, capsys: Any) -> None:
    code, out, _ = _run(capsys, "breakers", "--json")
    assert code == 0 and isinstance(json.loads(out), list)
    code, out, _ = _run(capsys, "dlq", "list", "--json")
    assert code == 0 and isinstance(json.loads(out), list)


def test_db_upgrade_is_idempotent(servers: Any, capsys: Any) -> None:
    code, out, _ = _run(capsys, "db", "upgrade")
    assert code == 0 and "is at revision head" in out and "@" in out


def test_bad_input_pair_is_refused(servers: Any, capsys: Any) -> None:
    code, _, err = _run(capsys, "run", "etl", "--input", "novalue")
    assert code == 1 and "--input 'novalue' is not KEY=VALUE" in err
