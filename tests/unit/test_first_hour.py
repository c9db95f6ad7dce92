"""What the CLI and ``orchestrator run`` say without servers: one-line errors for servers that
are away or bad settings, and which steps no live worker would run (issue 15)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from pydantic import ValidationError as PydanticError
from sqlalchemy.exc import OperationalError

from orchestrator.cli.failures import explain
from orchestrator.cli.output import LevelPrefix
from orchestrator.errors import ServiceUnavailable
from orchestrator.ops.workers import cannot_run, submit_check
from orchestrator.settings import Settings
from orchestrator.stores.redis.workers import WorkerInfo
from orchestrator.workflow import Workflow


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_REDIS_URL", "redis://:secret@127.0.0.1:6390/0")
    monkeypatch.setattr("orchestrator.cli.failures.get_settings", Settings)


def test_a_redis_error_is_one_line_with_the_url_redacted_and_dev_named() -> None:
    message = explain(redis.ConnectionError("Error 111 connecting. Connection refused."))
    assert message is not None and "\n" not in message
    assert message.startswith("cannot reach Redis at redis://:***@127.0.0.1:6390/0: Error 111")
    assert "secret" not in message and "source .orchestrator/env" in message


def test_a_database_that_does_not_exist_points_to_devs_exports() -> None:
    error = ServiceUnavailable(
        "PostgreSQL", "postgresql://h/orchestrator", 'database "orchestrator" does not exist', "Fix"
    )
    message = explain(error)
    assert message is not None and 'database "orchestrator" does not exist' in message
    assert "orchestrator dev" in message and "source .orchestrator/env" in message


def test_a_driver_error_names_postgresql() -> None:
    error = OperationalError("SELECT 1", {}, Exception("connection refused\nmore"))
    message = explain(error)
    assert message is not None and message.startswith("cannot reach PostgreSQL at ")


def test_a_setting_that_does_not_parse_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LEASE_SECONDS", "soon")
    with pytest.raises(PydanticError) as info:
        Settings()
    message = explain(info.value)
    assert message is not None and "ORCHESTRATOR_LEASE_SECONDS" in message


def test_an_unexpected_error_is_not_explained() -> None:
    assert explain(KeyError("x")) is None


def test_log_lines_read_like_the_cli_errors() -> None:
    record = logging.LogRecord("orchestrator", logging.WARNING, "", 0, "file skipped", (), None)
    assert LevelPrefix().format(record) == "warning: file skipped"


# -- which live worker would run a step ------------------------------------------------------------


def worker(name: str, queues: tuple[str, ...], tasks: tuple[str, ...]) -> WorkerInfo:
    return WorkerInfo(name, queues, tasks, 2, 1, 0.0, 0.0)


APP: Any = SimpleNamespace(tasks={}, conf=SimpleNamespace(task_default_queue="celery"))


def test_why_no_live_worker_would_run_a_task() -> None:
    bare, full = worker("bare@h", ("celery",), ()), worker("full@h", ("io",), ("t.a",))
    assert "no worker is running" in (cannot_run("t.a", "celery", []) or "")
    assert "no live worker consumes this queue; start one with -Q x" in (
        cannot_run("t.a", "x", [bare]) or ""
    )
    assert "has registered the task (workers: bare@h)" in (
        cannot_run("t.a", "celery", [bare]) or ""
    )
    assert cannot_run("t.a", "io", [bare, full]) is None


def test_submit_refuses_a_step_only_workers_without_its_task_consume() -> None:
    # Given a workflow with a step on the default queue and one on queue io
    spec = Workflow("w").step("a", "t.a").step("b", "t.b", after="a", queue="io").spec
    # When the only worker on the default queue lacks t.a, and none consumes io
    refused, notes = submit_check(APP, spec, [worker("bare@h", ("celery",), ("t.b",))])
    # Then step a is refused (its message would be dead-lettered) and step b noted (it waits)
    assert refused == [
        "workflow 'w', step 'a': task 't.a' on queue 'celery': no live worker on this queue "
        "has registered the task (workers: bare@h); add its module to their "
        "ORCHESTRATOR_TASK_MODULES and restart them"
    ]
    assert len(notes) == 1 and "step 'b'" in notes[0] and "waits until one does" in notes[0]
    # And with no live worker at all, nothing is refused and one note says so
    refused, notes = submit_check(APP, spec, [])
    assert refused == [] and "no live worker is registered" in notes[0]
