"""Worker log lines that say which run, step, task and attempt they come from.

:class:`RunContextFilter` copies ``current_run`` onto each record emitted while a step runs;
:func:`configure` puts it on a logger's handlers with either a JSON formatter (one object per
line, ``ORCHESTRATOR_LOG_FORMAT=json``) or the handler's own text format with a
``[run=… step=… task=… attempt=…]`` tag. Both formatters mask passwords in URLs.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from orchestrator.context import current_run
from orchestrator.settings import redact

CONTEXT_FIELDS = ("run_id", "step_id", "task_id", "attempt", "workflow")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+@[^\s'\"<>]*")


def scrub(text: str) -> str:
    """``text`` with the password of every URL in it masked."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact(m.group(0)), text)


class RunContextFilter(logging.Filter):
    """Adds ``run_id``, ``step_id``, ``task_id``, ``attempt``, ``workflow`` inside a step."""

    def filter(self, record: logging.LogRecord) -> bool:
        if current_run:
            for name in CONTEXT_FIELDS:
                setattr(record, name, getattr(current_run, name))
        else:
            # a record handled by several handlers keeps the context it was first given
            for name in CONTEXT_FIELDS:
                if not hasattr(record, name):
                    setattr(record, name, None)
        return True


def run_tag(record: logging.LogRecord) -> str:
    """``[run=… step=… task=… attempt=…]`` for a record logged inside a step, else ``""``."""
    run_id = getattr(record, "run_id", None)
    if run_id is None:
        return ""
    return (
        f"[run={run_id} step={getattr(record, 'step_id', None)} "
        f"task={getattr(record, 'task_id', None)} attempt={getattr(record, 'attempt', None)}]"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, and the step context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": scrub(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(entry, default=str)


class ContextTextFormatter(logging.Formatter):
    """Wraps a handler's text formatter: the run tag goes in front of the message."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter(logging.BASIC_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        tag = run_tag(record)
        if tag:
            # a copy, so other handlers (and error trackers grouping by msg) see the record as is
            record = copy.copy(record)
            record.msg, record.args = f"{tag} {record.getMessage()}", None
        return scrub(self.inner.format(record))


_FILTER = RunContextFilter()


def formatter_for(log_format: str, current: logging.Formatter | None) -> logging.Formatter:
    """The formatter to use for ``log_format`` (``json`` or ``text``), given the handler's."""
    if log_format == "json":
        return current if isinstance(current, JsonFormatter) else JsonFormatter()
    if isinstance(current, ContextTextFormatter):
        return current
    return ContextTextFormatter(current)


def configure(logger: logging.Logger | None, log_format: str = "text") -> None:
    """Give every handler of ``logger`` the run-context filter and the ``log_format`` formatter.

    Filters go on handlers, not on the logger, so records that propagate from child loggers
    (a task module's own logger) get the context too. Calling it again changes nothing.
    """
    if logger is None:
        return
    for handler in logger.handlers:
        handler.addFilter(_FILTER)
        handler.setFormatter(formatter_for(log_format, handler.formatter))
