"""One JSON codec for what steps return and receive: Celery's own (kombu's).

Celery's JSON serializer accepts ``datetime``, ``date``, ``time``, ``Decimal`` and ``UUID`` and
gives them back as such; the standard library's ``json.dumps`` refuses them. Results, inputs and
outputs go through this module everywhere they are stored (the per-run hash in Redis, the history
tables), so a step's dependents and ``run.wait()`` see what a Celery chain would have passed on.
PostgreSQL refuses ``\\u0000`` in text and JSONB: :func:`for_postgres` and :func:`text_for_postgres`
replace it (with U+FFFD) rather than lose a whole batch of unrelated history.
"""

from __future__ import annotations

import json
from typing import Any

from kombu.utils.json import dumps as _dumps
from kombu.utils.json import loads as _loads

_NUL_ESCAPE = "\\u0000"
_REPLACEMENT = "\\ufffd"


class UnencodableValue(TypeError):
    """A value Celery's JSON cannot encode (the message names its type)."""


class Encoded(str):
    """A value :func:`encode` already encoded (a step's result goes to Redis and to history
    once encoded, not twice)."""


def encode(value: Any) -> str:
    """``value`` as Celery's JSON; :class:`UnencodableValue` names the type it cannot encode."""
    try:
        return str(_dumps(value))
    except (TypeError, ValueError) as exc:
        raise UnencodableValue(str(exc)) from exc


def decode(raw: str | bytes) -> Any:
    """The value :func:`encode` wrote (``datetime``, ``Decimal``, ``UUID`` come back as such)."""
    return _loads(raw)


def revive(stored: Any) -> Any:
    """A value read from a JSONB column, with Celery's typed values turned back into objects."""
    if isinstance(stored, dict | list):
        return _loads(json.dumps(stored))
    return stored


def for_postgres(value: Any) -> str:
    """``value`` encoded for a JSONB column: Celery's JSON, with NUL characters replaced."""
    encoded = str(value) if isinstance(value, Encoded) else encode(value)
    return _strip_nul_escapes(encoded) if _NUL_ESCAPE in encoded else encoded


def text_for_postgres(value: str | None) -> str | None:
    """A text column's value without NUL characters (PostgreSQL refuses them)."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _strip_nul_escapes(encoded: str) -> str:
    # an escaped backslash followed by "u0000" is text, not a NUL: only odd runs of backslashes
    out: list[str] = []
    i = 0
    while (j := encoded.find(_NUL_ESCAPE, i)) != -1:
        slashes = len(encoded[:j]) - len(encoded[:j].rstrip("\\"))
        out.append(encoded[i:j])
        out.append(_NUL_ESCAPE if slashes % 2 else _REPLACEMENT)
        i = j + len(_NUL_ESCAPE)
    out.append(encoded[i:])
    return "".join(out)
