"""In-process profiling for ``bench/bench_profile.py``: cProfile and SQL statement counts.

A worker started with ``--pool solo`` runs every task in its main process, so a task that calls
``start()`` switches cProfile on for everything the worker then does (consuming, tracing, the
step's own bookkeeping, acking) until a task calls ``stop(path)``, which writes the profile to
``path`` and the SQL statements counted meanwhile to ``path + ".sql.json"``. The client calls the
same functions around the run it measures. Nothing here runs unless ``BENCH_PROFILE`` is set in
the worker's environment (``bench/tasks.py`` and ``bench/plain_app.py`` check it), so timed
benchmarks are not slowed.

SQL statements are counted with a SQLAlchemy ``before_cursor_execute`` listener on every
``Engine`` of the process (the orchestrator reaches PostgreSQL only through SQLAlchemy), keyed by
verb and table (``INSERT step_attempts``), plus one count per ``COMMIT``.
"""

from __future__ import annotations

import cProfile
import json
import re
from collections import Counter
from typing import Any

PROFILE_ENV = "BENCH_PROFILE"

_state: dict[str, Any] = {"profile": None, "listening": False}
_statements: Counter[str] = Counter()
_TABLE = re.compile(r"\b(?:INTO|UPDATE|FROM)\s+\"?(\w+)", re.IGNORECASE)


def statement_kind(statement: str) -> str:
    """``"INSERT runs"``, ``"SELECT step_attempts"``: the verb and the first table named."""
    words = statement.split(None, 1)
    verb = words[0].upper() if words else "?"
    table = _TABLE.search(statement)
    return f"{verb} {table.group(1)}" if table else verb


def _on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
    _statements[statement_kind(statement)] += 1


def _on_commit(_conn: Any) -> None:
    _statements["COMMIT"] += 1


def count_sql() -> None:
    """Count every SQL statement this process sends from now on (idempotent)."""
    if _state["listening"]:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _on_execute)
    event.listen(Engine, "commit", _on_commit)
    _state["listening"] = True


def sql_counts() -> dict[str, int]:
    """The statements counted since the last ``start()``, by kind."""
    return dict(_statements)


def start() -> None:
    """Forget earlier counts and switch cProfile on (for this thread) until ``stop``.

    Wall-clock timer: a CPU timer costs a system call per event, which inflates functions
    called often several-fold; time blocked (poll, recv, sleep) is told apart when reading."""
    _statements.clear()
    profile = cProfile.Profile()
    _state["profile"] = profile
    profile.enable()


def stop(path: str | None = None) -> dict[str, int]:
    """Switch cProfile off; write it to ``path`` and the SQL counts to ``path.sql.json``."""
    profile = _state.pop("profile", None)
    _state["profile"] = None
    if profile is not None:
        profile.disable()
        if path:
            profile.dump_stats(path)
    counts = sql_counts()
    if path:
        with open(f"{path}.sql.json", "w") as out:
            json.dump(counts, out)
    return counts
