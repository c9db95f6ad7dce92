"""A workflow DAG made ready to draw: its nodes, their status styles and a layered layout.

Every format (``core.graph_text``, ``core.graph_drawing``) draws :class:`GraphNode` lists, colours
them from the one status table here, and places steps by the same left-to-right layout: a step's
layer is the longest path from a root, and the order inside each layer is improved by barycenter
sweeps to reduce edge crossings.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple


@dataclass(frozen=True)
class GraphNode:
    """One step of the graph: its id, a label, the ids it depends on and its status."""

    id: str
    label: str
    parents: tuple[str, ...]
    status: str | None = None


class Style(NamedTuple):
    """How a status is drawn: box fill and stroke, text marker, ANSI colour code."""

    fill: str
    stroke: str
    marker: str
    ansi: str


STYLES: dict[str | None, Style] = {
    None: Style("#ffffff", "#607d8b", "·", "0"),
    "pending": Style("#eceff1", "#90a4ae", "○", "2"),
    "running": Style("#e3f2fd", "#1e88e5", "…", "34"),
    "retrying": Style("#fff3e0", "#fb8c00", "↻", "33"),
    "succeeded": Style("#e8f5e9", "#43a047", "✓", "32"),
    "failed": Style("#ffebee", "#e53935", "✗", "31"),
    "skipped": Style("#f5f5f5", "#bdbdbd", "-", "90"),
    "cancelled": Style("#fafafa", "#616161", "⊘", "35"),
}
STATUSES: tuple[str, ...] = tuple(s for s in STYLES if s is not None)
EDGE_COLOUR = "#8a8a8a"

Slot = str | tuple[str, int]  # a step id, or a waypoint (parent, layer) of edges skipping layers
_Links = dict[Slot, dict[Slot, None]]  # slot -> ordered set of neighbouring slots


def style_of(status: str | None) -> Style:
    """The style of ``status``; an unknown status is drawn like no status."""
    return STYLES.get(status, STYLES[None])


def parents_of(node: GraphNode) -> tuple[str, ...]:
    """The node's parents, each once."""
    return tuple(dict.fromkeys(node.parents))


def edges(nodes: Sequence[GraphNode]) -> list[tuple[str, str]]:
    """Every dependency as (parent, child)."""
    return [(parent, node.id) for node in nodes for parent in parents_of(node)]


def index(nodes: Sequence[GraphNode]) -> dict[str, GraphNode]:
    """Map id -> node; raise ValueError on duplicate ids or unknown parents."""
    by_id = {node.id: node for node in nodes}
    if len(by_id) != len(nodes):
        raise ValueError("duplicate step ids in graph")
    for parent, child in edges(nodes):
        if parent not in by_id:
            raise ValueError(f"step {child!r} depends on unknown step {parent!r}")
    return by_id


def _children(nodes: Sequence[GraphNode]) -> dict[str, tuple[str, ...]]:
    kids: dict[str, list[str]] = {node.id: [] for node in nodes}
    for parent, child in edges(nodes):
        kids[parent].append(child)
    return {nid: tuple(k) for nid, k in kids.items()}


def _ranks(nodes: Sequence[GraphNode]) -> dict[str, int]:
    """Longest path from a root for each step (Kahn's order); ValueError on a cycle."""
    index(nodes)
    children = _children(nodes)
    waiting = {node.id: len(parents_of(node)) for node in nodes}
    ready = deque(nid for nid, count in waiting.items() if count == 0)
    rank = dict.fromkeys(ready, 0)
    while ready:
        current = ready.popleft()
        for child in children[current]:
            rank[child] = max(rank.get(child, 0), rank[current] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if any(waiting.values()):
        raise ValueError("graph has a cycle")
    return rank


def _chains(nodes: Sequence[GraphNode], rank: dict[str, int]) -> list[list[Slot]]:
    """Each edge as the slots it passes: parent, a shared waypoint per skipped layer, child."""
    return [[p, *((p, r) for r in range(rank[p] + 1, rank[c])), c] for p, c in edges(nodes)]


def _relative(layer: list[Slot]) -> dict[Slot, float]:
    return {slot: (pos + 0.5) / len(layer) for pos, slot in enumerate(layer)}


def _sweep(layers: Iterable[list[Slot]], links: _Links, where: dict[Slot, float]) -> None:
    """Reorder each layer by the mean relative position of its linked slots."""
    for layer in layers:
        keys = {
            slot: sum(where[n] for n in links[slot]) / len(links[slot])
            if links.get(slot)
            else where[slot]
            for slot in layer
        }
        layer.sort(key=keys.__getitem__)
        where.update(_relative(layer))


def layered(nodes: Sequence[GraphNode]) -> tuple[list[list[Slot]], list[tuple[Slot, Slot]]]:
    """Slots grouped by layer in crossing-reduced order, and the distinct hops between them."""
    rank = _ranks(nodes)
    chains = _chains(nodes, rank)
    layers: list[list[Slot]] = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    waypoints = dict.fromkeys(slot for chain in chains for slot in chain[1:-1])
    for slot in [*(node.id for node in nodes), *waypoints]:
        layers[slot[1] if isinstance(slot, tuple) else rank[slot]].append(slot)
    ups: _Links = defaultdict(dict)
    downs: _Links = defaultdict(dict)
    hops = dict.fromkeys(hop for chain in chains for hop in pairwise(chain))
    for a, b in hops:
        downs[a][b] = ups[b][a] = None
    where = {slot: rel for layer in layers for slot, rel in _relative(layer).items()}
    for _ in range(2):
        _sweep(layers[1:], ups, where)
        _sweep(reversed(layers[:-1]), downs, where)
    return layers, list(hops)


def step_layers(layers: list[list[Slot]]) -> list[list[str]]:
    """The layers without their waypoints: step ids only."""
    return [[slot for slot in layer if isinstance(slot, str)] for layer in layers]


def layout(nodes: list[GraphNode]) -> dict[str, tuple[int, int]]:
    """Map step id -> (layer, position in layer) for a left-to-right drawing.

    The layer is the longest path from a root; positions within a layer come
    from barycenter sweeps (with waypoints on long edges) that reduce edge
    crossings. Raises ValueError on duplicate ids, unknown parents or cycles.
    """
    layers = step_layers(layered(nodes)[0])
    return {nid: (li, pos) for li, layer in enumerate(layers) for pos, nid in enumerate(layer)}
