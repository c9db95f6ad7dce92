"""Workflow concurrency limits: the option's model, its checks, the key of a run, and what a
slot store answers.

``Workflow("sync", concurrency={"max_runs": 2, "key": "inputs.tenant", "on_limit": "queue"})``
lets at most ``max_runs`` runs of the workflow hold a *slot* at once, per value of the CEL
``key`` over the run's ``inputs`` (no key: one limit for the whole workflow). A run over the
limit is, by ``on_limit``: ``queue``d (it stays ``pending`` and starts in submit order when a
slot frees), cancelled (``cancel_newest``), or it starts and the oldest running run of its key
is cancelled (``cancel_oldest``). Each (workflow, key) pair is one *slot name*
(:func:`slot_name`); the stores (``stores.redis.slots``, ``stores.memory.slots``) keep, per slot
name, the runs holding a slot and the line of runs waiting for one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from celpy import celtypes
from pydantic import BaseModel, ConfigDict

from orchestrator.core.expressions import ConditionFailed, check_names, value_of
from orchestrator.errors import ConcurrencyError, ConcurrencyKeyError

ON_LIMIT = ("queue", "cancel_newest", "cancel_oldest")
"""What a run over the limit does: wait in line, be cancelled, or cancel the oldest."""


class ConcurrencySpec(BaseModel):
    """A workflow's concurrency limit: ``max_runs`` at once per value of ``key``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_runs: int
    key: str | None = None
    """A CEL expression over ``inputs`` (e.g. ``inputs.tenant``); None: one limit for all."""
    on_limit: str = "queue"


@dataclass(frozen=True)
class Admission:
    """A slot store's answer to a run asking for a slot.

    ``outcome``: ``started`` (it holds a slot), ``queued`` (it waits in line, ``position``
    1 for the next), or ``rejected`` (``cancel_newest``: it should be cancelled). ``held``: the
    runs holding a slot of that name once the run was admitted. ``evicted``: runs that lost
    their slot to it (``cancel_oldest``: cancel them). ``promoted``: waiting runs that got a
    slot meanwhile (start them).
    """

    outcome: str
    position: int = 0
    held: int = 0
    evicted: tuple[str, ...] = ()
    promoted: tuple[str, ...] = ()


def check_concurrency(workflow: str, cc: ConcurrencySpec) -> None:
    """``max_runs`` ≥ 1, ``on_limit`` one of :data:`ON_LIMIT`, ``key`` a CEL expression over
    ``inputs`` that parses."""
    if cc.max_runs < 1:
        raise ConcurrencyError(
            workflow, f"concurrency max_runs={cc.max_runs} must be at least 1 run at once"
        )
    if cc.on_limit not in ON_LIMIT:
        raise ConcurrencyError(
            workflow,
            f"concurrency on_limit={cc.on_limit!r} must be one of {', '.join(ON_LIMIT)}",
        )
    if cc.key is not None:
        problem = check_names(cc.key, ("inputs",)) if cc.key.strip() else "is empty"
        if problem:
            raise ConcurrencyError(
                workflow,
                f"concurrency key {cc.key!r} {problem}; give a CEL expression over inputs, "
                "e.g. inputs.tenant, or leave key out for one limit per workflow",
            )


def key_of(workflow: str, cc: ConcurrencySpec, inputs: dict[str, Any]) -> str | None:
    """The run's key: ``cc.key``'s value over ``inputs`` as text (None without a key).

    Raises :class:`ConcurrencyKeyError` (before anything is written) when it cannot be
    evaluated or gives something other than a string or a number."""
    if cc.key is None:
        return None
    try:
        value = value_of(cc.key, {"inputs": inputs})
    except ConditionFailed as exc:
        raise ConcurrencyKeyError(
            workflow,
            f"concurrency key {cc.key!r} cannot be evaluated over the run's inputs ({exc}); "
            "pass inputs that give it a value",
        ) from exc
    scalar = celtypes.StringType | celtypes.IntType | celtypes.UintType | celtypes.DoubleType
    if isinstance(value, celtypes.BoolType) or not isinstance(value, scalar):
        raise ConcurrencyKeyError(
            workflow,
            f"concurrency key {cc.key!r} gave {value!r} ({type(value).__name__}); "
            "it must give a string or a number",
        )
    return str(value)


def slot_name(workflow: str, key: str | None) -> str:
    """The name of the slots that runs of ``workflow`` with ``key`` share (JSON: unambiguous
    whatever characters the workflow and the key hold)."""
    return json.dumps([workflow, key], separators=(",", ":"))


def slot_parts(name: str) -> tuple[str, str | None]:
    """The workflow and the key of a slot name."""
    workflow, key = json.loads(name)
    return str(workflow), None if key is None else str(key)


def describe_wait(name: str, held: int, limit: int, position: int) -> str:
    """What a queued run waits for, as a person reads it:
    ``2 of 2 runs of 'sync' for key 'acme' running; 3rd in line``."""
    workflow, key = slot_parts(name)
    of_key = f" for key {key!r}" if key is not None else ""
    return f"{held} of {limit} runs of {workflow!r}{of_key} running; {_ordinal(position)} in line"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
