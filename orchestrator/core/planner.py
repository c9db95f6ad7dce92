"""DAG analysis: a workflow spec becomes a :class:`Plan` of canvas segments joined in Redis.

The plan is a pure function of the spec (and of the steps already done, for a retried run), so
the client that submits a run and every worker that executes it compute the same plan.

How a DAG becomes canvas:

1. Dependencies are transitively reduced (``a→b→c`` plus ``a→c`` waits on ``b`` only; ``c``
   still receives ``a``'s result).
2. Series-parallel parts reduce to expressions of :class:`Task`, :class:`Series` and
   :class:`Parallel`, which compile to chain, group and chord with exact waiting semantics.
   Where the graph is not series-parallel (the N shape ``a→c, a→d, b→d``), a step is made a
   *join*: it starts a segment of its own that is published when a counter in Redis has seen
   every one of its parents finish; the compiler never adds a barrier elsewhere.
3. Segments are cut further so that no broker message carries more than ``MAX_MESSAGE_SIGS``
   signatures: a chain of chords otherwise carries the rest of the DAG in every message.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, TypeAlias

from orchestrator.core.spec import WorkflowSpec

MAX_MESSAGE_SIGS = 24
"""Most task signatures one broker message may carry (the task and the canvas it continues)."""


@dataclass(frozen=True)
class Task:
    step: str


@dataclass(frozen=True)
class Series:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Parallel:
    items: tuple[Expr, ...]


Expr: TypeAlias = Task | Series | Parallel
Mode = Literal["inputs", "chained", "fetch"]
"""How a step gets its arguments: the run's inputs, the previous task's result passed by the
canvas, or its parents' results fetched from the run's result hash."""


@dataclass(frozen=True)
class Segment:
    """Canvas published once every step in ``trigger`` has succeeded (``()``: at submit)."""

    index: int
    trigger: tuple[str, ...]
    body: Expr


@dataclass(frozen=True)
class StepPlan:
    id: str
    parents: tuple[str, ...]
    mode: Mode
    segment: int
    triggers: tuple[int, ...]
    sink: bool


@dataclass(frozen=True)
class Plan:
    """Segments, and for each step how it is called and which joins it counts toward."""

    workflow: str
    version: str
    steps: dict[str, StepPlan]
    segments: tuple[Segment, ...]
    order: tuple[str, ...]
    children: dict[str, tuple[str, ...]] = field(repr=False)

    @cached_property
    def sinks(self) -> list[str]:
        """The sinks this plan runs (a retried run's done sinks are not among them)."""
        return [s for s in self.order if s in self.steps and self.steps[s].sink]

    @property
    def start(self) -> list[Segment]:
        """Segments published when the run is submitted."""
        return [s for s in self.segments if not s.trigger]

    def descendants(self, step: str) -> list[str]:
        """Every step that (transitively) depends on ``step``, in topological order."""
        found: set[str] = set()
        stack = [step]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return [s for s in self.order if s in found]


def build_plan(
    spec: WorkflowSpec, done: frozenset[str] = frozenset(), limit: int = MAX_MESSAGE_SIGS
) -> Plan:
    """The plan of ``spec``; steps in ``done`` already have results and are not run again."""
    parents = {s.id: tuple(dict.fromkeys(s.after)) for s in spec.steps}
    order = topological_order(parents)
    todo = [s for s in order if s not in done]
    sched = {s: tuple(p for p in parents[s] if p not in done) for s in todo}
    reduced = transitive_reduction(todo, sched)
    pieces = [piece for raw in decompose(todo, reduced) for piece in bound(*raw, limit)]
    segments = tuple(Segment(i, trigger, body) for i, (trigger, body) in enumerate(pieces))
    return Plan(
        workflow=spec.name,
        version=spec.version,
        steps=_step_plans(todo, parents, segments),
        segments=segments,
        order=tuple(order),
        children=_children(order, parents),
    )


def topological_order(parents: dict[str, tuple[str, ...]]) -> list[str]:
    """Kahn's order, ties broken by declaration order (deterministic in every process)."""
    children = _children(list(parents), parents)
    waiting = {s: len(ps) for s, ps in parents.items()}
    ready = [s for s in parents if not waiting[s]]
    order: list[str] = []
    while ready:
        step = ready.pop(0)
        order.append(step)
        for child in children[step]:
            waiting[child] -= 1
            if not waiting[child]:
                ready.append(child)
    return order


def transitive_reduction(
    order: list[str], parents: dict[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Each step's parents minus those that are already ancestors of another parent."""
    bit = {s: 1 << i for i, s in enumerate(order)}
    ancestors: dict[str, int] = {}
    reduced: dict[str, tuple[str, ...]] = {}
    for step in order:
        above = 0
        for p in parents[step]:
            above |= ancestors[p]
        reduced[step] = tuple(p for p in parents[step] if not above & bit[p])
        ancestors[step] = above | sum(bit[p] for p in parents[step])
    return reduced


# -- series-parallel decomposition with joins ---------------------------------------------------

ROOT = ""


def decompose(
    order: list[str], parents: dict[str, tuple[str, ...]]
) -> list[tuple[tuple[str, ...], Expr]]:
    """(trigger, expression) pairs covering every step; joins where the DAG is not SP."""
    joins: set[str] = set()
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
        items = tuple(sorted(items, key=lambda i: rank[_steps_of(i)[0]]))
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


# -- message-size bound -------------------------------------------------------------------------


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
    rest = [sigs(i) for i in expr.items]
    return max(message_sigs(item, carry + sum(rest[k + 1 :])) for k, item in enumerate(expr.items))


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


# -- per-step facts -----------------------------------------------------------------------------


def _step_plans(
    todo: list[str], parents: dict[str, tuple[str, ...]], segments: tuple[Segment, ...]
) -> dict[str, StepPlan]:
    modes: dict[str, Mode] = {}
    home: dict[str, int] = {}
    triggers: dict[str, list[int]] = defaultdict(list)
    for seg in segments:
        _assign_modes(seg.body, None, parents, modes)
        for step in _steps_of(seg.body):
            home[step] = seg.index
        for step in seg.trigger:
            triggers[step].append(seg.index)
    has_child = {p for s in parents for p in parents[s]}
    return {
        s: StepPlan(s, parents[s], modes[s], home[s], tuple(triggers[s]), s not in has_child)
        for s in todo
    }


def _assign_modes(
    expr: Expr, prev: str | None, parents: dict[str, tuple[str, ...]], modes: dict[str, Mode]
) -> str | None:
    """Record each step's mode; returns the step whose result the canvas passes on, if any."""
    if isinstance(expr, Task):
        ps = parents[expr.step]
        modes[expr.step] = "inputs" if not ps else "chained" if ps == (prev,) else "fetch"
        return expr.step
    if isinstance(expr, Parallel):
        for item in expr.items:
            _assign_modes(item, prev, parents, modes)
        return None
    for item in expr.items:
        prev = _assign_modes(item, prev, parents, modes)
    return prev


def _steps_of(expr: Expr) -> list[str]:
    if isinstance(expr, Task):
        return [expr.step]
    return [s for i in expr.items for s in _steps_of(i)]


def _children(order: list[str], parents: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    kids: dict[str, list[str]] = {s: [] for s in order}
    for step in order:
        for p in parents[step]:
            kids[p].append(step)
    return {s: tuple(k) for s, k in kids.items()}
