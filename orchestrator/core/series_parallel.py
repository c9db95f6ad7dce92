"""Series-parallel expressions of a DAG, and the decomposition that finds them.

A DAG (its parents transitively reduced) is cut into groups of steps; each group reduces to an
expression of :class:`Task`, :class:`Series` and :class:`Parallel`, which the canvas compiles to
chain, group and chord with exact waiting semantics. Where a group is not series-parallel (the
N shape ``a→c, a→d, b→d``), a step is made a *join*: it starts a group of its own, triggered by
all of its parents, and the decomposition starts over; no barrier is added anywhere else.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TypeAlias


@dataclass(frozen=True)
class Task:
    """One step."""

    step: str


@dataclass(frozen=True)
class Series:
    """Items one after another (a chain)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Parallel:
    """Items side by side (a group, or a chord when something follows)."""

    items: tuple[Expr, ...]


Expr: TypeAlias = Task | Series | Parallel


ROOT = ""


def decompose(
    order: list[str], parents: dict[str, tuple[str, ...]], forced: frozenset[str] = frozenset()
) -> list[tuple[tuple[str, ...], Expr]]:
    """(trigger, expression) pairs covering every step; joins where the DAG is not SP, and the
    steps in ``forced`` (steps that must start a segment of their own)."""
    joins = set(forced)
    while True:
        groups = _owners(order, parents, joins)
        result: list[tuple[tuple[str, ...], Expr]] = []
        for key, nodes in groups.items():
            expr = sp_reduce(nodes, parents)
            if isinstance(expr, str):
                joins.add(expr)
                break
            result.append((parents[key] if key != ROOT else (), expr))
        else:
            return result


def _owners(
    order: list[str], parents: dict[str, tuple[str, ...]], joins: set[str]
) -> dict[str, list[str]]:
    """Steps grouped by the segment they belong to; a step whose parents differ becomes a join."""
    owner: dict[str, str] = {}
    groups: dict[str, list[str]] = defaultdict(list)
    for step in order:
        owners = list(dict.fromkeys(owner[p] for p in parents[step]))
        if not owners:
            owner[step] = ROOT
        elif step in joins or len(owners) > 1:
            joins.add(step)
            owner[step] = step
        else:
            owner[step] = owners[0]
        groups[owner[step]].append(step)
    return groups


Junction = tuple[str, str]
_S: Junction = ("S", "")
_T: Junction = ("T", "")


def sp_reduce(nodes: list[str], parents: dict[str, tuple[str, ...]]) -> Expr | str:
    """The SP expression of ``nodes``, or (when not SP) the step to turn into a join."""
    graph = _EdgeGraph(nodes, parents)
    graph.reduce()
    expr = graph.single()
    if expr is not None:
        rank = {n: i for i, n in enumerate(nodes)}
        return _ordered(expr, rank)
    stuck = [n for n in nodes if len(graph.ins[("i", n)]) > 1]
    if stuck:
        return stuck[0]
    inside = set(nodes)
    return next(n for n in nodes if sum(p in inside for p in parents[n]) > 1)


class _EdgeGraph:
    """Tasks as edges between junctions; series and parallel reductions merge edges."""

    def __init__(self, nodes: list[str], parents: dict[str, tuple[str, ...]]) -> None:
        self.edges: dict[int, tuple[Junction, Junction, Expr | None]] = {}
        self.ins: dict[Junction, list[int]] = defaultdict(list)
        self.outs: dict[Junction, list[int]] = defaultdict(list)
        inside = set(nodes)
        has_child = {p for n in nodes for p in parents[n] if p in inside}
        for n in nodes:
            sources = [("o", p) for p in parents[n] if p in inside] or [_S]
            for source in sources:
                self._add(source, ("i", n), None)
            self._add(("i", n), ("o", n), Task(n))
            if n not in has_child:
                self._add(("o", n), _T, None)

    def _add(self, u: Junction, v: Junction, expr: Expr | None) -> int:
        eid = len(self.edges) + 1 if not self.edges else max(self.edges) + 1
        self.edges[eid] = (u, v, expr)
        self.outs[u].append(eid)
        self.ins[v].append(eid)
        return eid

    def _remove(self, eid: int) -> tuple[Junction, Junction, Expr | None]:
        u, v, expr = self.edges.pop(eid)
        self.outs[u].remove(eid)
        self.ins[v].remove(eid)
        return u, v, expr

    def reduce(self) -> None:
        work = list(dict.fromkeys([_S, *self.ins, *self.outs]))
        while work:
            x = work.pop()
            work.extend(self._merge_parallel(x))
            if x not in (_S, _T) and len(self.ins[x]) == 1 and len(self.outs[x]) == 1:
                u, _, first = self._remove(self.ins[x][0])
                _, v, second = self._remove(self.outs[x][0])
                self._add(u, v, series(first, second))
                work.extend([u, v])

    def _merge_parallel(self, x: Junction) -> list[Junction]:
        by_target: dict[Junction, list[int]] = defaultdict(list)
        for eid in self.outs[x]:
            by_target[self.edges[eid][1]].append(eid)
        touched = []
        for target, eids in by_target.items():
            if len(eids) > 1:
                exprs = [self._remove(e)[2] for e in eids]
                merged: Expr | None = None
                for expr in exprs:
                    merged = parallel(merged, expr)
                self._add(x, target, merged)
                touched.extend([x, target])
        return touched

    def single(self) -> Expr | None:
        if len(self.edges) != 1:
            return None
        u, v, expr = next(iter(self.edges.values()))
        return expr if (u, v) == (_S, _T) else None


def _ordered(expr: Expr, rank: dict[str, int]) -> Expr:
    """Parallel branches in declaration order, so every process builds the same canvas."""
    if isinstance(expr, Task):
        return expr
    items = tuple(_ordered(i, rank) for i in expr.items)
    if isinstance(expr, Parallel):
        items = tuple(sorted(items, key=lambda i: rank[steps_of(i)[0]]))
        return Parallel(items)
    return Series(items)


def series(a: Expr | None, b: Expr | None) -> Expr | None:
    if a is None or b is None:
        return a if b is None else b
    items = (a.items if isinstance(a, Series) else (a,)) + (
        b.items if isinstance(b, Series) else (b,)
    )
    return Series(items)


def parallel(a: Expr | None, b: Expr | None) -> Expr | None:
    # an empty branch beside a non-empty one waits for nothing extra
    if a is None or b is None:
        return a if b is None else b
    items = (a.items if isinstance(a, Parallel) else (a,)) + (
        b.items if isinstance(b, Parallel) else (b,)
    )
    return Parallel(items)


def steps_of(expr: Expr) -> list[str]:
    """The steps of ``expr``, in its order."""
    if isinstance(expr, Task):
        return [expr.step]
    return [s for i in expr.items for s in steps_of(i)]
