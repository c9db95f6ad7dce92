"""The message-size bound: no broker message carries more than ``MAX_MESSAGE_SIGS`` signatures.

Publishing a chain of chords sends the rest of the chain inside every message, so one expression
of a large DAG can make messages that grow with the DAG. :func:`bound` cuts such an expression into
segments, each published by the steps that end the one before it.
"""

from __future__ import annotations

from itertools import accumulate

from orchestrator.core.series_parallel import Expr, Parallel, Series, Task

MAX_MESSAGE_SIGS = 24
"""Most task signatures one broker message may carry (the task and the canvas it continues)."""


def sigs(expr: Expr) -> int:
    """Number of task signatures in ``expr``."""
    if isinstance(expr, Task):
        return 1
    return sum(sigs(i) for i in expr.items)


def message_sigs(expr: Expr, carry: int = 0) -> int:
    """Signatures in the largest message publishing ``expr`` creates, with ``carry`` following."""
    if isinstance(expr, Task):
        return 1 + carry
    if isinstance(expr, Parallel):
        return max(message_sigs(i, carry) for i in expr.items)
    # after[k]: the signatures of the items after the k-th, which its message carries
    after = list(accumulate(reversed([sigs(i) for i in expr.items[1:]]), initial=0))[::-1]
    return max(message_sigs(item, carry + after[k]) for k, item in enumerate(expr.items))


def sinks(expr: Expr) -> tuple[str, ...]:
    if isinstance(expr, Task):
        return (expr.step,)
    if isinstance(expr, Series):
        return sinks(expr.items[-1])
    return tuple(s for i in expr.items for s in sinks(i))


def bound(
    trigger: tuple[str, ...], expr: Expr, limit: int = MAX_MESSAGE_SIGS
) -> list[tuple[tuple[str, ...], Expr]]:
    """Split ``expr`` into segments whose messages carry at most ``limit`` signatures."""
    if isinstance(expr, Task) or message_sigs(expr) <= limit:
        return [(trigger, expr)]
    if isinstance(expr, Parallel):
        small = tuple(i for i in expr.items if message_sigs(i) <= limit)
        pieces = [(trigger, small[0] if len(small) == 1 else Parallel(small))] if small else []
        for item in expr.items:
            if message_sigs(item) > limit:
                pieces += bound(trigger, item, limit)
        return pieces
    out: list[tuple[tuple[str, ...], Expr]] = []
    for chunk in _chunks(expr.items, limit):
        body = chunk[0] if len(chunk) == 1 else Series(chunk)
        out += bound(trigger, body, limit) if len(chunk) == 1 else [(trigger, body)]
        trigger = sinks(chunk[-1])
    return out


def _chunks(items: tuple[Expr, ...], limit: int) -> list[tuple[Expr, ...]]:
    """Consecutive runs of ``items``, built from the end, each small enough to publish at once."""
    chunks: list[tuple[Expr, ...]] = []
    current: tuple[Expr, ...] = ()
    for item in reversed(items):
        candidate = (item, *current)
        if message_sigs(Series(candidate)) <= limit or not current:
            current = candidate
        else:
            chunks.insert(0, current)
            current = (item,)
    chunks.insert(0, current)
    return chunks
