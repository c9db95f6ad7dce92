"""A configured server that cannot be reached gives one clear line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _cli(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *argv],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=60,
        env={**clean, **env},
    )


@pytest.mark.parametrize("argv", [["runs"], ["run", "etl", "-i", "source=x"], ["db", "upgrade"]])
def test_unreachable_database(argv: list[str], servers: dict[str, str]) -> None:
    done = _cli(
        *argv,
        ORCHESTRATOR_DATABASE_URL="postgresql://bob:s3cret@127.0.0.1:1/history",
        ORCHESTRATOR_REDIS_URL=servers["ORCHESTRATOR_REDIS_URL"],
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        "error: cannot reach PostgreSQL at postgresql://bob:***@127.0.0.1:1/history: "
    )
    assert "Connection refused" in done.stderr and "ORCHESTRATOR_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr + done.stdout


def test_unreachable_redis(servers: dict[str, str]) -> None:
    done = _cli(
        "run",
        "etl",
        "-i",
        "source=x",
        ORCHESTRATOR_REDIS_URL="redis://:pw@127.0.0.1:2/0",
        ORCHESTRATOR_DATABASE_URL=servers["ORCHESTRATOR_DATABASE_URL"],
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:2/0: ")
    assert "ORCHESTRATOR_REDIS_URL" in done.stderr and "Traceback" not in done.stderr
