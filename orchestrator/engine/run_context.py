"""A run's shared context: ``current_run.context`` inside a step, ``run.context()`` outside.

A JSON value per key, shared by every step of the run. ``set`` is atomic per key (one script in
Redis, ``RunContextStore``): two steps setting different keys at once both land, the last of two
setting one key wins. A value must be JSON data (Celery's JSON: also ``datetime``, ``Decimal``,
``UUID``), a key a non-empty string of at most :data:`MAX_KEY` characters, and the whole context
(keys and encoded values) at most ``ORCHESTRATOR_CONTEXT_MAX_BYTES`` bytes: anything else raises
``ContextError`` naming the run, step and key, and writes nothing. Each change is handed to the
history writer with the whole context and its version (``ContextEvent``), so history keeps the
latest context; it is read there once Redis no longer holds it (expired after
``result_expires``, or lost).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from orchestrator.codec import UnencodableValue, decode, encode
from orchestrator.engine.services import Services
from orchestrator.errors import ContextError, ServiceUnavailable
from orchestrator.records import ContextEvent

MAX_KEY = 200


class SharedContext:
    """The context of one run as one of its steps sees it (``current_run.context``)."""

    def __init__(self, rt: Services, run_id: str, workflow: str, step_id: str) -> None:
        self.rt = rt
        self.run_id = run_id
        self.where = f"workflow {workflow!r}, run {run_id}, step {step_id!r}"
        self._kept: dict[str, Any] | None = None  # history's copy, read once per step

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when no step set it."""
        self._check_key(key)
        raw = self.rt.contexts.get(self.run_id, key)
        if raw is not None:
            return decode(raw)
        if self._kept is None:  # not in Redis: never set, or Redis lost it (history has it)
            self._kept = self.rt.history.run_context(self.run_id) or {}
        return self._kept.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (JSON data) for every step of the run, and in history."""
        self._check_key(key)
        encoded = self._encode(key, value)
        limit = self.rt.settings.context_max_bytes
        done = self.rt.contexts.set(self.run_id, key, encoded, limit)
        if done is None:
            raise ContextError(
                f"{self.where}: setting context key {key!r} ({len(encoded)} bytes) would grow the "
                f"run's context past {limit} bytes (ORCHESTRATOR_CONTEXT_MAX_BYTES); keep large "
                "data elsewhere (a step's result, a file) and put its reference in the context"
            )
        version, values = done
        self.rt.writer.submit(ContextEvent(self.run_id, version, values, datetime.now(UTC)))

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            raise ContextError(
                f"{self.where}: context key {key!r} is not a string of 1 to {MAX_KEY} characters"
            )

    def _encode(self, key: str, value: Any) -> str:
        try:
            encoded = encode(value)
            json.loads(encoded, parse_constant=_refuse_constant)
        except (UnencodableValue, ValueError) as exc:
            raise ContextError(
                f"{self.where}: the value for context key {key!r} is not JSON data ({exc}); "
                "set a dict, list, str, number, bool or None (also datetime, Decimal, UUID)"
            ) from exc
        return encoded


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def run_context(rt: Services, run_id: str) -> dict[str, Any]:
    """The run's context: what history keeps, overlaid by what Redis holds (the newest)."""
    kept = rt.history.run_context(run_id) or {}
    try:
        live = rt.contexts.values(run_id) or {}
    except ServiceUnavailable:  # Redis away: history has the context up to the last change
        live = {}
    return {**kept, **{k: decode(v) for k, v in live.items()}}
