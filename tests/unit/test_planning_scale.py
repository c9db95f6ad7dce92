"""Planning stays exact and fast as DAGs grow: the series-parallel decomposition and the planner
give the same plans as the first (quadratic) algorithm, kept below as the reference, on many
random DAGs; and planning work grows about linearly with the DAG's size."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from itertools import count
from typing import Any

import pytest

from orchestrator.core import planner
from orchestrator.core import series_parallel as sp
from orchestrator.core.planner import build_plan
from orchestrator.core.series_parallel import Expr, Parallel, Series, Task, decompose, steps_of
from orchestrator.core.spec import WorkflowSpec
from tests.unit.test_planner import Parents, diamond_ladder, fan, random_dag, random_sp, spec_of

# -- the reference: the first decomposition, as it was before planning was made linear ----------

Junction = tuple[str, str]
Pairs = list[tuple[tuple[str, ...], Expr]]


def reference_decompose(
    order: list[str], parents: dict[str, tuple[str, ...]], forced: frozenset[str] = frozenset()
) -> Pairs:
    """Group the steps, reduce every group, and start over after each join found."""
    joins = set(forced)
    while True:
        owner: dict[str, str] = {}
        groups: dict[str, list[str]] = defaultdict(list)
        for step in order:
            owners = list(dict.fromkeys(owner[p] for p in parents[step]))
            if not owners:
                owner[step] = ""
            elif step in joins or len(owners) > 1:
                joins.add(step)
                owner[step] = step
            else:
                owner[step] = owners[0]
            groups[owner[step]].append(step)
        result: Pairs = []
        for key, nodes in groups.items():
            expr = reference_reduce(nodes, parents)
            if isinstance(expr, str):
                joins.add(expr)
                break
            result.append((parents[key] if key else (), expr))
        else:
            return result


def reference_reduce(nodes: list[str], parents: dict[str, tuple[str, ...]]) -> Expr | str:
    graph = ReferenceGraph(nodes, parents)
    graph.reduce()
    if len(graph.edges) == 1 and next(iter(graph.edges.values()))[:2] == (S, T):
        expr = next(iter(graph.edges.values()))[2]
        assert expr is not None
        return reference_ordered(expr, {n: i for i, n in enumerate(nodes)})
    stuck = [n for n in nodes if len(graph.ins[("i", n)]) > 1]
    inside = set(nodes)
    return stuck[0] if stuck else next(n for n in nodes if sum(p in inside for p in parents[n]) > 1)


S: Junction = ("S", "")
T: Junction = ("T", "")


class ReferenceGraph:
    """Tasks as edges between junctions; a work list of junctions to reduce, edge ids by max."""

    def __init__(self, nodes: list[str], parents: dict[str, tuple[str, ...]]) -> None:
        self.edges: dict[int, tuple[Junction, Junction, Expr | None]] = {}
        self.ins: dict[Junction, list[int]] = defaultdict(list)
        self.outs: dict[Junction, list[int]] = defaultdict(list)
        inside = set(nodes)
        has_child = {p for n in nodes for p in parents[n] if p in inside}
        for n in nodes:
            for source in [("o", p) for p in parents[n] if p in inside] or [S]:
                self.add(source, ("i", n), None)
            self.add(("i", n), ("o", n), Task(n))
            if n not in has_child:
                self.add(("o", n), T, None)

    def add(self, u: Junction, v: Junction, expr: Expr | None) -> None:
        eid = max(self.edges, default=0) + 1
        self.edges[eid] = (u, v, expr)
        self.outs[u].append(eid)
        self.ins[v].append(eid)

    def remove(self, eid: int) -> tuple[Junction, Junction, Expr | None]:
        u, v, expr = self.edges.pop(eid)
        self.outs[u].remove(eid)
        self.ins[v].remove(eid)
        return u, v, expr

    def reduce(self) -> None:
        work = list(dict.fromkeys([S, *self.ins, *self.outs]))
        while work:
            x = work.pop()
            work.extend(self.merge_parallel(x))
            if x not in (S, T) and len(self.ins[x]) == 1 and len(self.outs[x]) == 1:
                u, _, first = self.remove(self.ins[x][0])
                _, v, second = self.remove(self.outs[x][0])
                self.add(u, v, reference_series(first, second))
                work.extend([u, v])

    def merge_parallel(self, x: Junction) -> list[Junction]:
        by_target: dict[Junction, list[int]] = defaultdict(list)
        for eid in self.outs[x]:
            by_target[self.edges[eid][1]].append(eid)
        touched = []
        for target, eids in by_target.items():
            if len(eids) > 1:
                merged: Expr | None = None
                for expr in [self.remove(e)[2] for e in eids]:
                    merged = reference_parallel(merged, expr)
                self.add(x, target, merged)
                touched.extend([x, target])
        return touched


def reference_series(a: Expr | None, b: Expr | None) -> Expr | None:
    if a is None or b is None:
        return a if b is None else b
    return Series(
        (a.items if isinstance(a, Series) else (a,)) + (b.items if isinstance(b, Series) else (b,))
    )


def reference_parallel(a: Expr | None, b: Expr | None) -> Expr | None:
    if a is None or b is None:
        return a if b is None else b
    return Parallel(
        (a.items if isinstance(a, Parallel) else (a,))
        + (b.items if isinstance(b, Parallel) else (b,))
    )


def reference_ordered(expr: Expr, rank: dict[str, int]) -> Expr:
    if isinstance(expr, Task):
        return expr
    items = tuple(reference_ordered(i, rank) for i in expr.items)
    if isinstance(expr, Parallel):
        return Parallel(tuple(sorted(items, key=lambda i: rank[steps_of(i)[0]])))
    return Series(items)


# -- shapes ---------------------------------------------------------------------------------------


def fan_in(width: int) -> Parents:
    """``width`` roots joined by one step (a chord ``width → 1``)."""
    return {**{f"r{i}": [] for i in range(width)}, "join": [f"r{i}" for i in range(width)]}


def chain(length: int) -> Parents:
    return {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(length)}


def sparse_dag(rng: random.Random, n: int, most_parents: int = 3) -> Parents:
    """Each step after up to ``most_parents`` earlier ones: mostly not series-parallel."""
    return {
        f"s{j}": sorted({f"s{rng.randrange(j)}" for _ in range(rng.randint(0, most_parents))})
        if j
        else []
        for j in range(n)
    }


def random_shape(rng: random.Random) -> Parents:
    kind = rng.randrange(5)
    if kind == 0:
        return random_dag(rng, rng.randint(1, 30))
    if kind == 1:
        return sparse_dag(rng, rng.randint(1, 60), rng.randint(1, 4))
    shape, _, _ = random_sp(rng, rng.randint(1, 50), count(), single_junction=kind == 2)
    if kind == 4:  # a series-parallel DAG with a few extra edges forward (N shapes)
        names = list(shape)
        for _ in range(rng.randint(1, 4)):
            i, j = sorted(rng.sample(range(len(names)), 2)) if len(names) > 1 else (0, 0)
            if i < j:
                shape[names[j]] = sorted({*shape[names[j]], names[i]})
    return shape


def reduced_parents(parents: Parents) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    as_tuples = {s: tuple(ps) for s, ps in parents.items()}
    order = planner.topological_order(as_tuples)
    return order, planner.transitive_reduction(order, as_tuples)


def plan_text(
    parents: Parents, done: frozenset[str] = frozenset(), limit: int = 24, options: bool = False
) -> str:
    spec = spec_with_options(parents, random.Random(len(parents))) if options else spec_of(parents)
    plan = build_plan(spec, done, limit)
    return repr((plan.segments, plan.steps, plan.order, plan.children))


def spec_with_options(parents: Parents, rng: random.Random) -> WorkflowSpec:
    """Some steps conditional (``when``, ``trigger``) or mapped (``for_each``): their own
    segments, and their children's."""
    steps: list[dict[str, Any]] = []
    for s, ps in parents.items():
        step: dict[str, Any] = {"id": s, "task": f"t.{s}", "after": ps}
        draw = rng.random()
        if draw < 0.1:
            step["when"] = "inputs.go"
        elif draw < 0.2:
            step["trigger"] = "none_failed"
        elif draw < 0.3 and ps:
            step["for_each"] = ps[0]
        steps.append(step)
    return WorkflowSpec(name="w", steps=steps)


# -- the decomposition is the reference's ------------------------------------------------------


@pytest.mark.parametrize("seed", range(300))
def test_decompose_is_the_reference_on_random_dags_with_forced_joins(seed: int) -> None:
    # Given a random DAG (series-parallel or not), reduced, and a few steps forced to be joins
    rng = random.Random(seed)
    order, parents = reduced_parents(random_shape(rng))
    forced = frozenset(s for s in order if rng.random() < rng.choice([0.0, 0.05, 0.2]))
    # When decomposed / Then the segments and their expressions are the reference's
    assert decompose(order, parents, forced) == reference_decompose(order, parents, forced)


@pytest.mark.parametrize("seed", range(100))
def test_plans_are_the_reference_ones_with_done_steps_and_message_limits(seed: int) -> None:
    # Given a random DAG, some steps already done, and a message limit
    rng = random.Random(1000 + seed)
    parents = random_shape(rng)
    done = frozenset(s for s in parents if rng.random() < 0.15)
    limit = rng.choice([1, 3, 8, 24, 10**9])
    # When planned with the new and with the reference decomposition / Then the plans are equal
    new = plan_text(parents, done, limit)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(planner, "decompose", reference_decompose)
        assert new == plan_text(parents, done, limit)


LARGE = {
    "fan-in 300": fan_in(300),
    "fan-out-in 200": fan(200),
    "chain 300": chain(300),
    "ladder 100": diamond_ladder(100),
    "sparse 300": sparse_dag(random.Random(3), 300),
    "dense 80": random_dag(random.Random(4), 80),
}


@pytest.mark.parametrize("name", LARGE)
def test_large_shapes_plan_as_the_reference_does(name: str) -> None:
    order, parents = reduced_parents(LARGE[name])
    assert decompose(order, parents) == reference_decompose(order, parents)


@pytest.mark.parametrize(
    ("seed", "limits", "options", "recorded"),
    [
        (2026, [3, 24, 10**9], False, "024c928e25711771b779cfa0641b3b07"),
        (2027, [3, 24], True, "fcf63686147584c9ee03fd7dba335bcd"),
    ],
)
def test_plans_match_the_ones_recorded_from_the_first_planner(
    seed: int, limits: list[int], options: bool, recorded: str
) -> None:
    # Given 150 fixed random DAGs with done steps and message limits, and with ``options`` some
    # steps conditional or mapped (forced joins), else the large shapes too / When planned
    digest = hashlib.sha256()
    rng = random.Random(seed)
    for _ in range(150):
        parents = random_shape(rng)
        done = frozenset(s for s in parents if rng.random() < 0.1)
        digest.update(plan_text(parents, done, rng.choice(limits), options).encode())
    for parents in LARGE.values() if not options else ():
        digest.update(plan_text(parents).encode())
    # Then every segment, expression and step plan is the one the first planner made
    assert digest.hexdigest()[:32] == recorded


# -- planning work grows linearly -----------------------------------------------------------------


def items_built(parents: Parents, patch: pytest.MonkeyPatch) -> int:
    """How many items the Series and Parallel made while decomposing ``parents`` hold in all."""
    built = [0]

    class CountedSeries(Series):
        def __init__(self, items: tuple[Expr, ...]) -> None:
            built[0] += len(items)
            super().__init__(items)

    class CountedParallel(Parallel):
        def __init__(self, items: tuple[Expr, ...]) -> None:
            built[0] += len(items)
            super().__init__(items)

    patch.setattr(sp, "Series", CountedSeries)
    patch.setattr(sp, "Parallel", CountedParallel)
    decompose(*reduced_parents(parents))
    return built[0]


@pytest.mark.parametrize("shape", [fan_in, chain, diamond_ladder, fan])
def test_expressions_are_built_once_not_grown_an_item_at_a_time(shape, monkeypatch) -> None:
    # Given a wide (or long) DAG of 2000 steps or more / When decomposed
    built = items_built(shape(2000), monkeypatch)
    # Then each Series and Parallel is made once with its items (a copy per merged edge made
    # the fan-in's 2000-item Parallel 2000 times: about two million items)
    assert built <= 3 * len(shape(2000))


def n_blocks(blocks: int) -> tuple[Parents, frozenset[str]]:
    """A chain of blocks ``h -> (a, b), a -> (c, d), b -> d, (c, d) -> t``; each N shape is not
    series-parallel, and each head ``h`` is forced to start a segment."""
    parents: Parents = {}
    for i in range(blocks):
        h, a, b, c, d, t = (f"{x}{i}" for x in "habcdt")
        parents |= {h: [f"t{i - 1}"] if i else [], a: [h], b: [h], c: [a], d: [a, b], t: [c, d]}
    return parents, frozenset(f"h{i}" for i in range(blocks))


def test_a_join_found_in_one_group_does_not_make_the_others_reduce_again(monkeypatch) -> None:
    # Given 40 groups, each of which needs a join of its own
    parents, forced = n_blocks(40)
    order, reduced = reduced_parents(parents)
    reductions = [0]
    reduce = sp.sp_reduce

    def counted(nodes: list[str], parents: dict[str, tuple[str, ...]]) -> Expr | str:
        reductions[0] += 1
        return reduce(nodes, parents)

    monkeypatch.setattr(sp, "sp_reduce", counted)
    # When decomposed
    pairs = decompose(order, reduced, forced)
    # Then each group is reduced once, and again only after a join cut it (starting over after
    # each join reduced every group before it again: 40 * 41 / 2 times and more)
    assert len(pairs) == 120 and pairs == reference_decompose(order, reduced, forced)
    assert reductions[0] <= 40 + 120
