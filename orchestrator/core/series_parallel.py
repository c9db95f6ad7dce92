"""Series-parallel expressions of a DAG, and the decomposition that finds them.

A DAG (its parents transitively reduced) is cut into groups of steps; each group reduces to an
expression of :class:`Task`, :class:`Series` and :class:`Parallel`, which the canvas compiles to
chain, group and chord with exact waiting semantics. Where a group is not series-parallel (the
N shape ``a→c, a→d, b→d``), a step is made a *join*: it starts a group of its own, triggered by
all of its parents, and the group it was in is cut again; no barrier is added anywhere else.
A group reduces in time linear in its size.
"""

from __future__ import annotations

from collections import defaultdict, deque
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
    steps in ``forced`` (steps that must start a segment of their own).

    A join found in one group cuts that group only: the others, and so the joins found in them,
    do not change. A series-parallel group is reduced once; a group that is not is reduced again
    after each join found in it (the work is then joins found × group size). The pairs come in
    the order of their first step in ``order``."""
    joins = set(forced)
    pending = list(_owners(order, parents, joins).items())
    found: dict[str, Expr] = {}
    while pending:
        key, nodes = pending.pop()
        expr = sp_reduce(nodes, parents)
        if isinstance(expr, str):
            joins.add(expr)
            pending += _owners(nodes, parents, joins).items()
        else:
            found[key] = expr
    position = {step: i for i, step in enumerate(order)}
    keys = sorted(found, key=lambda k: -1 if k == ROOT else position[k])
    return [(parents[key] if key != ROOT else (), found[key]) for key in keys]


def _owners(
    order: list[str], parents: dict[str, tuple[str, ...]], joins: set[str]
) -> dict[str, list[str]]:
    """Steps grouped by the segment they belong to; a step whose parents differ becomes a join.

    ``order`` may be one group: its steps other than roots and joins have their parents in it."""
    owner: dict[str, str] = {}
    groups: dict[str, list[str]] = defaultdict(list)
    for step in order:
        if not parents[step]:
            owner[step] = ROOT
        elif step in joins:
            owner[step] = step
        else:
            owners = {owner[p] for p in parents[step]}
            if len(owners) > 1:
                joins.add(step)
            owner[step] = step if len(owners) > 1 else owners.pop()
        groups[owner[step]].append(step)
    return groups


def sp_reduce(nodes: list[str], parents: dict[str, tuple[str, ...]]) -> Expr | str:
    """The SP expression of ``nodes``, or (when not SP) the step to turn into a join: the first
    whose edges from its parents do not merge into one."""
    graph = _EdgeGraph(nodes, parents)
    graph.reduce()
    part = graph.single()
    if part is not None:
        return _frozen(part, graph.index)
    stuck = [n for k, n in enumerate(nodes) if graph.ins[_before(k)] > 1]
    if stuck:
        return stuck[0]
    inside = set(nodes)
    return next(n for n in nodes if sum(p in inside for p in parents[n]) > 1)


class _Acc:
    """A Series (or Parallel) whose items still grow as the reduction merges edges."""

    __slots__ = ("parallel", "items")

    def __init__(self, parallel: bool, items: deque[Task | _Acc]) -> None:
        self.parallel = parallel
        self.items = items


Part: TypeAlias = Task | _Acc | None
"""What an edge carries: a step, items being merged, or nothing (an edge that only orders)."""


def _merge(parallel: bool, a: Part, b: Part) -> Part:
    """``a`` then ``b`` (side by side when ``parallel``); the items of a Series in a Series (of a
    Parallel in a Parallel) join it, the shorter into the longer, so that no item is copied more
    than log2(steps) times however the edges merge."""
    # an edge that only orders adds nothing: in a series it is no step, and an empty branch beside
    # a non-empty one waits for nothing extra
    if a is None or b is None:
        return a if b is None else b
    if isinstance(a, _Acc) and a.parallel == parallel:
        if isinstance(b, _Acc) and b.parallel == parallel:
            if len(a.items) >= len(b.items):
                a.items.extend(b.items)
                return a
            b.items.extendleft(reversed(a.items))
            return b
        a.items.append(b)
        return a
    if isinstance(b, _Acc) and b.parallel == parallel:
        b.items.appendleft(a)
        return b
    return _Acc(parallel, deque((a, b)))


def _frozen(part: Task | _Acc, rank: dict[str, int]) -> Expr:
    """The expression of ``part``, parallel branches in declaration order (``rank``), so that
    every process builds the same canvas."""
    if isinstance(part, Task):
        return part
    items = [_frozen(item, rank) for item in part.items]
    if not part.parallel:
        return Series(tuple(items))
    items.sort(key=lambda item: rank[_first(item)])
    return Parallel(tuple(items))


def _first(expr: Expr) -> str:
    """The first step of ``expr`` (``steps_of(expr)[0]``)."""
    while not isinstance(expr, Task):
        expr = expr.items[0]
    return expr.step


_S, _T = 0, 1


def _before(k: int) -> int:
    """The junction before the ``k``-th step."""
    return 2 * k + 2


def _after(k: int) -> int:
    """The junction after the ``k``-th step."""
    return 2 * k + 3


class _EdgeGraph:
    """Tasks as edges between junctions; series and parallel reductions merge edges.

    A junction that would only pass one edge on (before a step with one parent or none, after a
    step with no child or whose only child has other parents) is left out as the graph is built:
    a series reduction done in advance. Parallel edges merge as soon as they appear, so two
    junctions share one edge at most and each reduction is found and done in constant time
    (merging items aside, see :func:`_merge`): reducing a group is linear in its size. A junction
    keeps only how many edges it has on each side and the XOR of their other ends, which is the
    other end of its only edge when it has one (flat lists of ints, cheap to build)."""

    def __init__(self, nodes: list[str], parents: dict[str, tuple[str, ...]]) -> None:
        self.index = index = {n: k for k, n in enumerate(nodes)}
        self.ups = [_inside(parents[n], index) for n in nodes]
        self.kids = [0] * len(nodes)  # how many children each step has in the group
        self.last = [0] * len(nodes)  # its last child: its only one when it has one
        for k, up in enumerate(self.ups):
            for p in up:
                self.kids[p] += 1
                self.last[p] = k
        self.junctions = _before(len(nodes))
        self.edges: dict[int, Part] = {}  # u * junctions + v: what the edge u → v carries
        self.ins, self.outs = [0] * self.junctions, [0] * self.junctions
        self.in_xor, self.out_xor = [0] * self.junctions, [0] * self.junctions
        self.work = list(range(_before(0), self.junctions))
        for k, n in enumerate(nodes):
            self._add(self._entry(k), self._exit(k), Task(n))
            for p in self.ups[k] if len(self.ups[k]) > 1 else ():
                if self.kids[p] > 1:
                    self._add(_after(p), _before(k), None)

    def _entry(self, k: int) -> int:
        """The junction the ``k``-th step's edge starts at."""
        up = self.ups[k]
        if not up:
            return _S
        return _after(up[0]) if len(up) == 1 else _before(k)

    def _exit(self, k: int) -> int:
        """The junction the ``k``-th step's edge ends at."""
        if not self.kids[k]:
            return _T
        child = self.last[k]
        return _before(child) if self.kids[k] == 1 and len(self.ups[child]) > 1 else _after(k)

    def _add(self, u: int, v: int, part: Part) -> None:
        key = u * self.junctions + v
        if key in self.edges:
            self.edges[key] = _merge(True, self.edges[key], part)
            self.work += (u, v)  # one edge fewer at each: either may now reduce in series
        else:
            self.edges[key] = part
            self.outs[u] += 1
            self.out_xor[u] ^= v
            self.ins[v] += 1
            self.in_xor[v] ^= u

    def _remove(self, u: int, v: int) -> Part:
        self.outs[u] -= 1
        self.out_xor[u] ^= v
        self.ins[v] -= 1
        self.in_xor[v] ^= u
        return self.edges.pop(u * self.junctions + v)

    def reduce(self) -> None:
        """Series reductions until none is left (parallel ones happen as edges are added)."""
        while self.work:
            x = self.work.pop()  # the source has no in-edge, the sink no out-edge
            if self.ins[x] == 1 and self.outs[x] == 1:
                u, v = self.in_xor[x], self.out_xor[x]
                first, second = self._remove(u, x), self._remove(x, v)
                self._add(u, v, _merge(False, first, second))

    def single(self) -> Part:
        """What the one edge left carries, if the group reduced to one edge source → sink."""
        return self.edges.get(_S * self.junctions + _T) if len(self.edges) == 1 else None


def _inside(parents: tuple[str, ...], index: dict[str, int]) -> tuple[int, ...]:
    """The positions of the ``parents`` that are in the group, each once."""
    if not parents:
        return ()
    return tuple(dict.fromkeys(index[p] for p in parents if p in index))


def steps_of(expr: Expr) -> list[str]:
    """The steps of ``expr``, in its order."""
    if isinstance(expr, Task):
        return [expr.step]
    return [s for i in expr.items for s in steps_of(i)]
