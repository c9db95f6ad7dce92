"""``orchestrator dev``'s choices that need no server: credentials, which servers to use, kept
ports and the export lines."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from orchestrator.dev.backends import open_backends
from orchestrator.dev.exports import export_lines, exports, write_env_file
from orchestrator.dev.flower import flower_access, flower_credentials
from orchestrator.dev.supervision import kept_port
from orchestrator.settings import Settings


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


def test_a_kept_port_stays_the_same_until_something_else_takes_it(tmp_path: Path) -> None:
    # Given no port noted yet / When a port is chosen twice / Then it is noted and kept
    noted = tmp_path / "redis" / "port"
    first = kept_port(noted)
    assert kept_port(noted) == first and noted.read_text().strip() == str(first)
    # When something else listens on it / Then another is chosen and noted
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        taken.listen()
        moved = kept_port(noted)
    assert moved != first and noted.read_text().strip() == str(moved)


def test_the_preferred_port_is_taken_when_free_and_nothing_is_noted(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert kept_port(tmp_path / "port", free) == free


def test_export_lines_are_complete_and_the_env_file_notes_moved_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given what dev chose and the worker's settings (a relative workflows path)
    monkeypatch.chdir(tmp_path)
    urls = {"ORCHESTRATOR_REDIS_URL": "redis://127.0.0.1:6379/0"}
    settings = Settings(task_modules="tasks,more", workflows_path="config/workflows")
    # When the export lines are made
    lines = export_lines(exports(urls, settings), Path("/venv/bin"))
    # Then PATH comes first, and the task modules and the absolute workflows path are there
    assert lines[0] == 'export PATH=/venv/bin:"$PATH"'
    assert "export ORCHESTRATOR_TASK_MODULES=tasks,more" in lines
    assert f"export ORCHESTRATOR_WORKFLOWS_PATH={tmp_path}/config/workflows" in lines
    assert "export ORCHESTRATOR_REDIS_URL=redis://127.0.0.1:6379/0" in lines
    # And the env file (private) says whether the servers moved since it was last written
    assert write_env_file(tmp_path, lines) is False
    assert (tmp_path / "env").stat().st_mode & 0o777 == 0o600
    assert write_env_file(tmp_path, lines) is False
    moved = [line.replace(":6379/", ":6380/") for line in lines]
    assert write_env_file(tmp_path, moved) is True


def test_dev_s_worker_sends_task_events_only_beside_flower(tmp_path: Path) -> None:
    from orchestrator.dev.server import worker_service

    beside = worker_service({}, tmp_path / "w.log", 2, "dev", events=True)
    alone = worker_service({}, tmp_path / "w.log", 2, "dev")
    assert "-E" in beside.argv and "-E" not in alone.argv
