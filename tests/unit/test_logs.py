"""Unit tests for orchestrator.logs: a log line names the run, step, task and attempt."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from orchestrator.context import RunContext, reset_current, set_current
from orchestrator.logs import configure

Capture = Callable[[str], tuple[logging.Logger, io.StringIO]]


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Factory: a logger whose one handler writes to a buffer, configured for ``log_format``."""
    made: list[logging.Logger] = []

    def make(log_format: str) -> tuple[logging.Logger, io.StringIO]:
        buffer = io.StringIO()
        logger = logging.getLogger(f"test.logs.{log_format}.{len(made)}")
        logger.handlers = [logging.StreamHandler(buffer)]
        logger.handlers[0].setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.setLevel(logging.INFO)
        logger.propagate = False
        configure(logger, log_format)
        made.append(logger)
        return logger, buffer

    yield make
    for logger in made:
        logger.handlers = []


def in_step(fn: Callable[[], None], attempt: int = 2) -> None:
    token = set_current(RunContext("run-1", "load", attempt, "etl", "task-9", dict))
    try:
        fn()
    finally:
        reset_current(token)


def test_json_lines_carry_the_step_context_only_inside_a_step(capture: Capture) -> None:
    # Given a logger configured for JSON
    logger, buffer = capture("json")
    # When it logs outside a step, inside one, and after it
    logger.info("before")
    in_step(lambda: logger.warning("loading %d rows", 3))
    logger.info("after")
    # Then every line is a JSON object, and only the one logged in the step names it
    before, inside, after = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert inside["message"] == "loading 3 rows" and inside["level"] == "WARNING"
    assert {k: inside[k] for k in ("run_id", "step_id", "task_id", "attempt", "workflow")} == {
        "run_id": "run-1",
        "step_id": "load",
        "task_id": "task-9",
        "attempt": 2,
        "workflow": "etl",
    }
    for line in (before, after):
        assert not {"run_id", "step_id", "task_id", "attempt"} & set(line)
        assert line["logger"] == logger.name and "ts" in line


def test_json_line_keeps_the_traceback(capture: Capture) -> None:
    logger, buffer = capture("json")

    def fail() -> None:
        try:
            raise ValueError("bad row")
        except ValueError:
            logger.exception("load failed")

    in_step(fail)
    line = json.loads(buffer.getvalue())
    assert line["run_id"] == "run-1" and "ValueError: bad row" in line["exception"]


def test_text_lines_tag_the_step_and_keep_the_handler_format(capture: Capture) -> None:
    # Given a logger with a text format of its own
    logger, buffer = capture("text")
    # When it logs inside a step and outside
    in_step(lambda: logger.info("loading %s", "facts"), attempt=1)
    logger.info("idle")
    # Then the step's line is tagged, the other is as the format makes it
    inside, outside = buffer.getvalue().splitlines()
    assert inside == "INFO [run=run-1 step=load task=task-9 attempt=1] loading facts"
    assert outside == "INFO idle"


def test_other_handlers_see_the_record_unchanged(capture: Capture) -> None:
    # Given a second, plain handler on the same logger (say, an error tracker)
    logger, _ = capture("text")
    seen: list[logging.LogRecord] = []

    class Tracker(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Tracker())
    in_step(lambda: logger.info("loading %s", "facts"))
    # Then its record still has the original template and arguments
    assert seen[0].msg == "loading %s" and seen[0].args == ("facts",)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_passwords_in_urls_are_masked(capture: Capture, log_format: str) -> None:
    logger, buffer = capture(log_format)
    logger.error("cannot reach postgresql://app:s3cret@db:5432/orchestrator")
    assert "s3cret" not in buffer.getvalue()
    assert "postgresql://app:***@db:5432/orchestrator" in buffer.getvalue()


def test_configuring_twice_adds_nothing(capture: Capture) -> None:
    logger, buffer = capture("text")
    configure(logger, "text")
    in_step(lambda: logger.info("once"))
    assert buffer.getvalue().count("[run=run-1") == 1
    assert len(logger.handlers[0].filters) == 1
