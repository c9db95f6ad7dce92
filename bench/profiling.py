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

Also here, for the benches that watch other processes (``bench_sustained.py``,
``bench_steps_per_run.py``, ``bench_rss.py``): a process tree's CPU and a process's RSS, read
from ``/proc``.
"""

from __future__ import annotations

import cProfile
import json
import os
import re
from collections import Counter
from pathlib import Path
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


# -- CPU and memory of other processes, read from /proc -------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from the state field on (the name may hold spaces), or None."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _processes() -> dict[int, list[str]]:
    """Every live process's stat fields (from the state on), by pid: one pass over /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            found[int(entry.name)] = fields
    return found


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (a prefork worker's pool), by pid."""
    return sorted(p for p, fields in _processes().items() if int(fields[1]) == pid)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and of every descendant, live or ended.

    Each live process counts its own time and that of its children it has reaped (``cutime``,
    ``cstime``), so a PostgreSQL backend that exits between two readings still counts, in its
    postmaster's figure."""
    table = _processes()
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if current in table:
            ticks += sum(int(f) for f in table[current][11:15])  # utime, stime, cutime, cstime
            todo.extend(p for p, fields in table.items() if int(fields[1]) == current)
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``/proc/PID/statm``), None once it has exited."""
    try:
        resident = int((Path("/proc") / str(pid) / "statm").read_text().split()[1])
    except (OSError, IndexError):
        return None
    return resident * os.sysconf("SC_PAGE_SIZE") / 2**20
