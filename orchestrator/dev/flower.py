"""Flower in the development stack: where it listens, its login, and its configuration file.

The port is 5555 when free the first time, then the same as the last time (noted in the data
directory's ``flower-port``) while it is free. The login is ``ORCHESTRATOR_FLOWER_BASIC_AUTH``
when set, otherwise a generated password kept in a file only its owner reads, so it stays the
same between runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.dev.supervision import SupervisionError, kept_port

FLOWER_PORT = 5555
FLOWER_USER = "admin"


@dataclass(frozen=True)
class FlowerAccess:
    """Where Flower listens and the login it asks for."""

    url: str
    basic_auth: str  # user:password
    generated: bool  # ours, from the credentials file: shown once, at startup

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or FLOWER_PORT


def flower_access(data_dir: Path, environ: Mapping[str, str] = os.environ) -> FlowerAccess:
    """Where Flower listens (as the last time, or 5555 if free) and its credentials:
    configured or generated."""
    url = environ.get("ORCHESTRATOR_FLOWER_URL")
    if not url:
        url = f"http://127.0.0.1:{kept_port(data_dir / 'flower-port', FLOWER_PORT)}"
    given = environ.get("ORCHESTRATOR_FLOWER_BASIC_AUTH")
    if given:
        return FlowerAccess(url, given, generated=False)
    return FlowerAccess(url, flower_credentials(data_dir / "flower-credentials"), generated=True)


def flower_credentials(path: Path) -> str:
    """``admin:<random>`` kept in ``path`` (mode 0600), so it stays the same between runs."""
    with contextlib.suppress(FileNotFoundError):
        value = path.read_text().strip()
        user, _, password = value.partition(":")
        if user and password:
            path.chmod(0o600)
            return value
    value = f"{FLOWER_USER}:{secrets.token_urlsafe(18)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(value + "\n")
    return value


def flower_conf() -> Path:
    """The project's ``config/flowerconfig.py``; dev must run from the project root to find it."""
    conf = Path("config/flowerconfig.py").resolve()
    if not conf.is_file():
        raise SupervisionError(
            f"{conf} not found: run `orchestrator dev` from the project root, or pass --no-flower"
        )
    return conf
