"""Embedded Redis and PostgreSQL: real processes, data kept across restarts, nothing left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from orchestrator.dev.embedded import EmbeddedError, EmbeddedServers, embedded, start_embedded

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh directory outside pytest's ``tmp_path`` root.

    As root, PostgreSQL runs as ``pgserver`` and must pass through the parents of its data
    directory, but every new pytest session resets ``/tmp/pytest-of-root`` to 0700.
    """
    path = Path(tempfile.mkdtemp(prefix="orchestrator-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _family(pid: int) -> set[int]:
    """``pid`` and its direct children (PostgreSQL's checkpointer, walwriter, ...)."""
    kids = {pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rpartition(")")[2].split()[1] == str(pid):
                kids.add(int(stat.parent.name))
        except OSError:
            continue
    return kids


def _server_pids(servers: EmbeddedServers) -> set[int]:
    assert servers.redis_pid is not None and servers.postgres_pid is not None
    return _family(servers.redis_pid) | _family(servers.postgres_pid)


def _timed_start(data_dir: Path) -> tuple[EmbeddedServers, float]:
    began = time.monotonic()
    servers = start_embedded(data_dir)
    return servers, time.monotonic() - began


def test_start_write_stop_restart_keeps_data(data_dir: Path) -> None:
    servers, first = _timed_start(data_dir)
    pids = _server_pids(servers)
    try:
        assert servers.redis_url.startswith("redis://127.0.0.1:")
        assert servers.env()["ORCHESTRATOR_DATABASE_URL"] == servers.database_url
        client = redis.Redis.from_url(servers.redis_url)
        client.set("embedded:key", "value")
        assert client.get("embedded:key") == b"value"
        client.close()
        with psycopg.connect(servers.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE runs (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO runs VALUES (1, 'kept')")
    finally:
        servers.stop()
    servers.stop()  # idempotent
    assert not [pid for pid in pids if _alive(pid)]

    again, second = _timed_start(data_dir)
    try:
        with psycopg.connect(again.database_url) as conn:
            assert conn.execute("SELECT name FROM runs WHERE id = 1").fetchone() == ("kept",)
        client = redis.Redis.from_url(again.redis_url)
        assert client.get("embedded:key") == b"value"
        client.close()
    finally:
        again.stop()
    print(f"\nembedded start: first {first:.2f}s (with initdb), restart {second:.2f}s")


def test_recovers_from_a_killed_run(data_dir: Path) -> None:
    # A run SIGKILLed while its servers were up: they keep running, with their pid files.
    script = (
        "import sys, time; from pathlib import Path; "
        "from orchestrator.dev.embedded import start_embedded; "
        "s = start_embedded(Path(sys.argv[1])); print(s.redis_pid, s.postgres_pid, flush=True); "
        "time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(data_dir)], stdout=subprocess.PIPE, env=env
    )
    assert owner.stdout is not None
    orphans: set[int] = set()
    try:
        for pid in owner.stdout.readline().split():
            orphans |= _family(int(pid))
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    assert orphans and all(_alive(pid) for pid in orphans)
    with embedded(data_dir) as servers:
        assert not [pid for pid in orphans if _alive(pid)]
        with psycopg.connect(servers.database_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(EmbeddedError, match="in use"):
            start_embedded(data_dir)  # a live run holds the directory
        new_pids = _server_pids(servers)
    assert not [pid for pid in new_pids if _alive(pid)]
