"""DAG analysis: a workflow spec becomes a :class:`Plan` of canvas segments joined in Redis.

The plan is a pure function of the spec (and of the steps already done, for a retried run), so
the client that submits a run and every worker that executes it compute the same plan.

How a DAG becomes canvas:

1. Dependencies are transitively reduced (``a→b→c`` plus ``a→c`` waits on ``b`` only; ``c``
   still receives ``a``'s result).
2. Series-parallel parts reduce to expressions of ``Task``, ``Series`` and ``Parallel``, which
   compile to chain, group and chord with exact waiting semantics (:mod:`.series_parallel`).
   Where the graph is not series-parallel (the N shape ``a→c, a→d, b→d``), a step is made a
   *join*: it starts a segment of its own that is published when a counter in Redis has seen
   every one of its parents finish; the compiler never adds a barrier elsewhere.
3. Segments are cut further so that no broker message carries more than ``MAX_MESSAGE_SIGS``
   signatures: a chain of chords otherwise carries the rest of the DAG in every message
   (:mod:`.message_bound`).
4. Each step learns how it gets its arguments and which joins it counts toward (:class:`StepPlan`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from orchestrator.core.message_bound import MAX_MESSAGE_SIGS, bound
from orchestrator.core.series_parallel import Expr, Parallel, Task, decompose, steps_of
from orchestrator.core.spec import WorkflowSpec

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
    sched = {s: tuple(p for p in parents[s] if p not in done) for s in todo} if done else parents
    reduced = transitive_reduction(todo, sched)
    joins = own_segments(spec, todo, sched)
    pieces = [piece for raw in decompose(todo, reduced, joins) for piece in bound(*raw, limit)]
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
    order = [s for s in parents if not waiting[s]]
    for step in order:  # the queue of ready steps is the order itself: it grows as they come
        for child in children[step]:
            waiting[child] -= 1
            if not waiting[child]:
                order.append(child)
    return order


def transitive_reduction(
    order: list[str], parents: dict[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Each step's parents minus those that are already ancestors of another parent."""
    bit = {s: 1 << i for i, s in enumerate(order)}
    has_child = {p for s in order for p in parents[s]}
    ancestors: dict[str, int] = {}
    reduced: dict[str, tuple[str, ...]] = {}
    for step in order:
        ps = parents[step]
        above = 0
        for p in ps:
            above |= ancestors[p]
        reduced[step] = tuple(p for p in ps if not above & bit[p]) if above else ps
        if step in has_child:  # a sink's ancestors are never asked for
            ancestors[step] = above | sum(bit[p] for p in ps)
    return reduced


def own_segments(
    spec: WorkflowSpec, todo: list[str], parents: dict[str, tuple[str, ...]]
) -> frozenset[str]:
    """Steps that must start a segment of their own, published once their parents are counted:
    those that decide at run time whether they run, and the children of steps that may be
    skipped (a skip is counted, never passed along a chain) or whose result comes later than
    their message (a ``for_each`` step ends with its last item, a child workflow's step with
    its child run)."""
    may_skip: set[str] = set()
    later: set[str] = set()  # their result comes after their message
    joins: set[str] = set()
    for step_id in todo:
        step = spec.step(step_id)
        after_skip = not may_skip.isdisjoint(parents[step_id])
        deferred = step.result_later
        if step.conditional or deferred or after_skip or not later.isdisjoint(parents[step_id]):
            joins.add(step_id)
        if step.when is not None or after_skip:
            may_skip.add(step_id)
        if deferred:
            later.add(step_id)
    return frozenset(joins)


# -- per-step facts -----------------------------------------------------------------------------


def _step_plans(
    todo: list[str], parents: dict[str, tuple[str, ...]], segments: tuple[Segment, ...]
) -> dict[str, StepPlan]:
    modes: dict[str, Mode] = {}
    home: dict[str, int] = {}
    triggers: dict[str, list[int]] = defaultdict(list)
    for seg in segments:
        _assign_modes(seg.body, None, parents, modes)
        for step in steps_of(seg.body):
            home[step] = seg.index
        for step in seg.trigger:
            triggers[step].append(seg.index)
    has_child = {p for s in parents for p in parents[s]}
    return {
        s: StepPlan(
            s, parents[s], modes[s], home[s], tuple(triggers.get(s, ())), s not in has_child
        )
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


def _children(order: list[str], parents: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    kids: dict[str, list[str]] = {s: [] for s in order}
    for step in order:
        for p in parents[step]:
            kids[p].append(step)
    return {s: tuple(k) for s, k in kids.items()}
