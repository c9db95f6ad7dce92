"""What another shell needs to use a running ``orchestrator dev``: its ``export`` lines.

They name the servers (the URLs dev chose), Flower, the task modules and the workflows path the
worker uses (the path made absolute, so they work from any directory), and put the ``orchestrator``
command on ``PATH``. They are printed, and written to ``<data dir>/env`` so that another shell
needs only ``source .orchestrator/env``; a start whose addresses differ from the file's (a port
was taken meanwhile) says so, since shells that sourced it point at the old ones.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from orchestrator.settings import Settings

ENV_FILE = "env"
EXAMPLE = "orchestrator run etl -i source=s3://bucket/day --wait"
_LINE = re.compile(r"export (ORCHESTRATOR_\w+)=(.*)")


def cli_directory() -> Path | None:
    """The directory of the ``orchestrator`` command of this Python (its venv's ``bin``)."""
    found = Path(sys.executable).parent
    return found if (found / "orchestrator").exists() else None


def exports(chosen: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The ``ORCHESTRATOR_*`` variables another shell needs: ``chosen`` (what dev set: server
    URLs, Flower) and the task modules and workflows path the worker uses (``settings``)."""
    return {
        **chosen,
        "ORCHESTRATOR_TASK_MODULES": ",".join(settings.task_modules),
        "ORCHESTRATOR_WORKFLOWS_PATH": str(Path(settings.workflows_path).resolve()),
    }


def export_lines(values: Mapping[str, str], cli: Path | None = None) -> list[str]:
    """``export NAME=value`` lines (values quoted for a POSIX shell), PATH first."""
    found = [f'export PATH={shlex.quote(str(cli))}:"$PATH"'] if cli is not None else []
    return found + [f"export {name}={shlex.quote(values[name])}" for name in sorted(values)]


def write_env_file(data_dir: Path, lines: list[str]) -> bool:
    """Write ``lines`` to ``<data dir>/env`` (mode 0600); whether the servers' addresses differ
    from those the file held before (shells that sourced it must source it again)."""
    path = data_dir / ENV_FILE
    before = _urls(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    header = "# written by `orchestrator dev`: source it in another shell to use its servers\n"
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(header + "\n".join(lines) + "\n")
    after = _urls(path)
    return bool(before) and before != after


def _urls(path: Path) -> dict[str, str]:
    """The server URLs an env file exports."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            match = _LINE.match(line)
            if match and match[1].endswith(("_URL", "_BACKEND")):
                found[match[1]] = match[2]
    return found
