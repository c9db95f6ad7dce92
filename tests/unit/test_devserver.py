"""``orchestrator dev``'s choices that need no server: credentials and which servers to use."""

from __future__ import annotations

from pathlib import Path

from orchestrator.dev.backends import open_backends
from orchestrator.dev.flower import flower_access, flower_credentials


def test_generated_flower_password_is_private_and_stable_between_runs(tmp_path: Path) -> None:
    # Given no credentials file yet
    path = tmp_path / "flower-credentials"

    # When dev runs twice
    first, second = flower_credentials(path), flower_credentials(path)

    # Then one admin password, random and long, kept in a file only its owner reads
    user, _, password = first.partition(":")
    assert user == "admin" and len(password) >= 20
    assert second == first
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_broken_credentials_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "flower-credentials"
    path.write_text("no-colon\n")
    assert flower_credentials(path).startswith("admin:")
    assert path.stat().st_mode & 0o777 == 0o600


def test_configured_flower_credentials_and_url_win(tmp_path: Path) -> None:
    env = {
        "ORCHESTRATOR_FLOWER_BASIC_AUTH": "ops:s3cret",
        "ORCHESTRATOR_FLOWER_URL": "http://127.0.0.1:5600",
    }
    access = flower_access(tmp_path, env)
    assert (access.basic_auth, access.port, access.generated) == ("ops:s3cret", 5600, False)
    assert not (tmp_path / "flower-credentials").exists()


def test_configured_urls_are_used_and_nothing_is_started(tmp_path: Path) -> None:
    env = {
        "ORCHESTRATOR_BROKER_URL": "redis://cache:6379/0",
        "ORCHESTRATOR_DATABASE_URL": "postgresql://u:pw@db/orchestrator",
    }
    backends = open_backends(tmp_path, env, say=lambda _: None)
    assert backends.embedded is None and backends.chosen == {}
    assert backends.redis_url == "redis://cache:6379/0"
    assert not any(tmp_path.iterdir())
