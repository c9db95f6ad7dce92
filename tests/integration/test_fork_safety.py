"""Fork safety: a worker's main process threads import nothing, and children forked while those
threads work never hang (field notes: a module lock held by a thread at fork stays held)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import Workflow
from tests.integration import workload

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(servers: dict[str, str], *args: str) -> dict[str, list[object]]:
    wf = Workflow("fork-safety").step("a", workload.noop, queue="nowhere")
    run = wf.run()
    script = ROOT / "tests/integration/scripts/fork_under_load.py"
    out = subprocess.run(
        [sys.executable, str(script), run.id, wf.spec.version, *args],
        env={**os.environ, **servers, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_main_process_threads_import_nothing_and_forked_children_never_hang(
    servers: dict[str, str],
) -> None:
    # Given a worker main process prepared as `celery worker` prepares it (worker_init)
    # When its reconciler, delay pump and history writer work in a thread while it forks 20 times
    found = _run(servers)
    # Then the thread imported no module (no module lock can be inherited held) ...
    assert found["imported"] == [], found["imported"]
    # ... and every child loaded its plan and exited
    assert found["codes"] == [0] * 20


def test_without_the_warm_up_the_threads_import_lazily(servers: dict[str, str]) -> None:
    # the hazard the warm-up removes: what main did before, a thread importing drivers lazily
    found = _run(servers, "--no-prepare")
    assert any(name.startswith(("psycopg", "sqlalchemy")) for name in found["imported"])
