"""Tables, JSON, durations, shortened values and log lines for the CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def emit_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return str(value)


def as_dict(record: Any) -> dict[str, Any]:
    return json.loads(json.dumps(record, default=_default))  # type: ignore[no-any-return]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "-"
    if end is None:
        return "…"
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def color_enabled() -> bool:
    return sys.stdout.isatty()


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def clock(at: datetime | None) -> str:
    """Local wall-clock time of ``at``, to the millisecond."""
    return "-" if at is None else at.astimezone().strftime("%H:%M:%S.%f")[:-3]


class LevelPrefix(logging.Formatter):
    """``warning: …`` lines, as the CLI's own errors read."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"
