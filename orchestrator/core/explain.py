"""Readable validation messages: pydantic's errors as one sentence that names the step, and
"did you mean …" suggestions drawn from the names that do exist (keys, tasks)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# names users bring from other tools, and the key that means the same here
KEY_SYNONYMS = {
    "depends_on": "after",
    "depends": "after",
    "dependencies": "after",
    "needs": "after",
    "requires": "after",
    "upstream": "after",
    "parents": "after",
    "args": "kwargs",
    "arguments": "kwargs",
    "params": "kwargs",
    "parameters": "kwargs",
    "retries": "retry",
    "time_limit": "timeout",
    "soft_time_limit": "soft_timeout",
    "function": "task",
    "cron": "schedule",
}

# what to write instead, for a value of another tool's form (here: Celery's string rate limits)
VALUE_HINTS = {
    "rate_limit": (
        "; a step's rate_limit is global, counted across every worker: "
        "{key: ..., limit: ..., period: seconds}; Celery's per-worker rate limit such as "
        "'10/m' goes on the task: @task(rate_limit='10/m')"
    ),
}


def did_you_mean(word: str, known: Iterable[str], synonyms: Mapping[str, str] = {}) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known``, or an empty string."""
    names = sorted(set(known))
    found = synonyms.get(word)
    if found is None or found not in names:
        close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
        found = close[0] if close else None
    if found is None and "." in word:  # a dotted task name: match on its last part
        tails = {name.rpartition(".")[2]: name for name in names}
        close = difflib.get_close_matches(word.rpartition(".")[2], list(tails), n=1, cutoff=0.75)
        found = tails[close[0]] if close else None
    return f" (did you mean {found!r}?)" if found else ""


def pydantic_problem(
    error: Mapping[str, Any], data: Mapping[str, Any], keys: Mapping[str, Sequence[str]]
) -> tuple[str | None, str]:
    """The step an error of ``WorkflowSpec.model_validate(data)`` is about, and what is wrong.

    ``error`` is one of pydantic's ``errors()``; ``keys`` lists the keys each part allows
    (``workflow``, ``step``, ``retry``, ``schedule``).
    """
    loc = tuple(error.get("loc", ()))
    step = _step_id(loc, data)
    part, field = _part(loc), str(loc[-1]) if loc else ""
    where = f"{part} " if part in ("retry", "schedule") else ""
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        allowed = keys.get(part, ())
        hint = did_you_mean(field, allowed, KEY_SYNONYMS)
        return step, f"unknown {where}key {field!r}{hint}; the keys are {', '.join(allowed)}"
    if kind == "missing":
        return step, f"{where}key {field!r} is missing"
    value = error.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {value!r})"
    path = ".".join(str(p) for p in loc if not isinstance(p, int)) or "the document"
    if step is not None and loc[:1] == ("steps",):
        path = ".".join(str(p) for p in loc[2:]) or "the step"
    hint = VALUE_HINTS.get(field, "") if isinstance(value, str) else ""
    return step, f"{path}: {error.get('msg', 'invalid')}{shown}{hint}"


def _step_id(loc: tuple[Any, ...], data: Mapping[str, Any]) -> str | None:
    if len(loc) < 2 or loc[0] != "steps" or not isinstance(loc[1], int):
        return None
    steps = data.get("steps")
    if isinstance(steps, list) and loc[1] < len(steps) and isinstance(steps[loc[1]], dict):
        found = steps[loc[1]].get("id")
        if isinstance(found, str) and found:
            return found
    return f"#{loc[1] + 1}"


def _part(loc: tuple[Any, ...]) -> str:
    """Which model an error's location is in: workflow, step, retry or schedule."""
    if loc[:1] == ("schedule",) and len(loc) > 1:
        return "schedule"
    if loc[:1] == ("steps",) and len(loc) > 2:
        return "retry" if loc[2] == "retry" and len(loc) > 3 else "step"
    return "workflow"
