"""Draw a workflow DAG as Mermaid, Graphviz DOT, SVG, PNG or terminal text.

A pure rendering module (stdlib + Pillow only) for showing a workflow's steps
and, for a run, the status of each step. SVG and PNG use our own left-to-right
layered layout (no graphviz binary needed): a step's layer is the longest path
from a root, and the order inside each layer is improved by barycenter sweeps
to reduce edge crossings. All formats share one status colour table.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, pairwise
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont


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

Point = tuple[float, float]
Slot = str | tuple[str, int]  # a step id, or a waypoint (parent, layer) of edges skipping layers
_Links = dict[Slot, dict[Slot, None]]  # slot -> ordered set of neighbouring slots
NODE_H, COL_GAP, ROW_GAP, MARGIN, PAD, ARROW = 46.0, 70.0, 14.0, 20.0, 10.0, 8.0
ID_SIZE, LABEL_SIZE, TITLE_SIZE, TITLE_H, LEGEND_H = 13, 11, 16, 30.0, 26.0
EDGE_COLOUR, TEXT_COLOUR, LABEL_COLOUR = "#8a8a8a", "#212121", "#555555"
MAX_PNG_SIDE, MIN_PNG_FONT = 8000, 4


def _style(status: str | None) -> Style:
    return STYLES.get(status, STYLES[None])


def _parents(node: GraphNode) -> tuple[str, ...]:
    return tuple(dict.fromkeys(node.parents))


def _edges(nodes: Sequence[GraphNode]) -> list[tuple[str, str]]:
    return [(parent, node.id) for node in nodes for parent in _parents(node)]


def _index(nodes: Sequence[GraphNode]) -> dict[str, GraphNode]:
    """Map id -> node; raise ValueError on duplicate ids or unknown parents."""
    by_id = {node.id: node for node in nodes}
    if len(by_id) != len(nodes):
        raise ValueError("duplicate step ids in graph")
    for parent, child in _edges(nodes):
        if parent not in by_id:
            raise ValueError(f"step {child!r} depends on unknown step {parent!r}")
    return by_id


def _children(nodes: Sequence[GraphNode]) -> dict[str, tuple[str, ...]]:
    kids: dict[str, list[str]] = {node.id: [] for node in nodes}
    for parent, child in _edges(nodes):
        kids[parent].append(child)
    return {nid: tuple(k) for nid, k in kids.items()}


def _ranks(nodes: Sequence[GraphNode]) -> dict[str, int]:
    """Longest path from a root for each step (Kahn's order); ValueError on a cycle."""
    _index(nodes)
    children = _children(nodes)
    waiting = {node.id: len(_parents(node)) for node in nodes}
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
    return [[p, *((p, r) for r in range(rank[p] + 1, rank[c])), c] for p, c in _edges(nodes)]


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


def _layered(nodes: Sequence[GraphNode]) -> tuple[list[list[Slot]], list[tuple[Slot, Slot]]]:
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


def _steps(layers: list[list[Slot]]) -> list[list[str]]:
    return [[slot for slot in layer if isinstance(slot, str)] for layer in layers]


def layout(nodes: list[GraphNode]) -> dict[str, tuple[int, int]]:
    """Map step id -> (layer, position in layer) for a left-to-right drawing.

    The layer is the longest path from a root; positions within a layer come
    from barycenter sweeps (with waypoints on long edges) that reduce edge
    crossings. Raises ValueError on duplicate ids, unknown parents or cycles.
    """
    layers = _steps(_layered(nodes)[0])
    return {nid: (li, pos) for li, layer in enumerate(layers) for pos, nid in enumerate(layer)}


# --- text formats -------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    return "".join(c if c.isalnum() or c in " -_.:/,()" else f"#{ord(c)};" for c in text)


def to_mermaid(nodes: list[GraphNode], title: str = "") -> str:
    """Mermaid ``flowchart LR`` source, one ``classDef`` per status.

    Steps get safe synthetic ids (``n0``, ``n1``...); the real id and label are
    shown in the quoted, entity-escaped box text.
    """
    _index(nodes)
    ids = {node.id: f"n{i}" for i, node in enumerate(nodes)}
    lines = [f"---\ntitle: {json.dumps(title)}\n---"] if title else []
    lines.append("flowchart LR")
    for node in nodes:
        text = f"<b>{_mermaid_text(node.id)}</b><br/><small>{_mermaid_text(node.label)}</small>"
        cls = f":::{node.status}" if node.status in STATUSES else ""
        lines.append(f'    {ids[node.id]}["{text}"]{cls}')
    lines += [f"    {ids[parent]} --> {ids[child]}" for parent, child in _edges(nodes)]
    lines += [f"    classDef {s} fill:{STYLES[s].fill},stroke:{STYLES[s].stroke}" for s in STATUSES]
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_node(node: GraphNode) -> str:
    style = _style(node.status)
    small = f'<font point-size="10">{html.escape(node.label)}</font>'
    label = f"<<b>{html.escape(node.id)}</b><br/>{small}>"
    attrs = f'label={label}, fillcolor="{style.fill}", color="{style.stroke}"'
    return f"  {_dot_str(node.id)} [{attrs}];"


def to_dot(nodes: list[GraphNode], title: str = "") -> str:
    """Graphviz DOT source (left to right), boxes filled by status."""
    _index(nodes)
    lines = [
        "digraph workflow {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        f'  edge [color="{EDGE_COLOUR}"];',
    ]
    if title:
        lines += [f"  label={_dot_str(title)};", "  labelloc=t;"]
    lines += [_dot_node(node) for node in nodes]
    lines += [f"  {_dot_str(p)} -> {_dot_str(c)};" for p, c in _edges(nodes)]
    return "\n".join([*lines, "}"]) + "\n"


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def to_text(nodes: list[GraphNode], color: bool = False) -> str:
    """Terminal drawing: one block per layer, each step as ``marker id  label  ← parents``.

    ANSI colours are used only when ``color`` is true.
    """
    by_id = _index(nodes)
    width = max((len(node.id) for node in nodes), default=0)
    lines: list[str] = []
    for li, layer in enumerate(_steps(_layered(nodes)[0])):
        lines.append(_paint(f"layer {li}", "1", color))
        for nid in layer:
            node, style = by_id[nid], _style(by_id[nid].status)
            head = _paint(f"{style.marker} {nid.ljust(width)}", style.ansi, color)
            tail = f"  ← {', '.join(_parents(node))}" if node.parents else ""
            lines.append(f"  {head}  {node.label}{tail}".rstrip())
    return "\n".join(lines) + "\n"


# --- drawn formats: one scene of shapes, emitted as SVG or painted with Pillow --------------


class _Box(NamedTuple):
    cls: str
    at: Point  # top-left corner
    size: Point
    style: Style
    tip: str  # tooltip (SVG only)


class _Text(NamedTuple):
    at: Point  # left end of the baseline
    text: str
    size: int
    colour: str = TEXT_COLOUR
    bold: bool = False


class _Edge(NamedTuple):
    ctrl: tuple[Point, ...]  # start point, then 3 points per cubic Bézier segment
    arrow: bool  # ends at a step (one per dependency), not at a waypoint


_Shape = _Box | _Text | _Edge


def _text_w(text: str, size: float) -> float:
    return len(text) * size * 0.6


def _fit(text: str, size: float, width: float) -> str:
    room = max(1, int(width / (size * 0.6)))
    return text if len(text) <= room else text[: room - 1] + "…"


def _legend(nodes: Sequence[GraphNode], top: float) -> list[_Shape]:
    present = [s for s in STATUSES if s in {node.status for node in nodes}]
    xs = accumulate((30 + _text_w(s, LABEL_SIZE) for s in present), initial=MARGIN)
    return [
        shape
        for s, x in zip(present, xs, strict=False)
        for shape in (
            _Box("swatch", (x, top), (12, 12), STYLES[s], s),
            _Text((x + 18, top + 11), s, LABEL_SIZE),
        )
    ]


def _boxes(layers: list[list[Slot]], node_w: float, top: float) -> dict[Slot, Point]:
    """Top-left corner of each slot: layers as columns, each centred vertically."""
    tallest, step = max(map(len, layers), default=0), NODE_H + ROW_GAP
    return {
        slot: (MARGIN + li * (node_w + COL_GAP), top + (tallest - len(layer)) * step / 2 + i * step)
        for li, layer in enumerate(layers)
        for i, slot in enumerate(layer)
    }


def _node_shapes(node: GraphNode, at: Point, node_w: float) -> list[_Shape]:
    (x, y), room = at, node_w - 2 * PAD
    return [
        _Box("node", at, (node_w, NODE_H), _style(node.status), node.id),
        _Text((x + PAD, y + 19), _fit(node.id, ID_SIZE, room), ID_SIZE, bold=True),
        _Text((x + PAD, y + 36), _fit(node.label, LABEL_SIZE, room), LABEL_SIZE, LABEL_COLOUR),
    ]


def _hop(a: Slot, b: Slot, boxes: dict[Slot, Point], node_w: float) -> _Edge:
    """Bézier from the right side of ``a`` to ``b``: through a waypoint, or to a step's arrow."""
    (ax, ay), (bx, by), through = boxes[a], boxes[b], isinstance(b, tuple)
    x0, y0, x1, y1 = ax + node_w, ay + NODE_H / 2, bx - (0 if through else ARROW), by + NODE_H / 2
    dx = (x1 - x0) / 2
    ctrl = [(x0, y0), (x0 + dx, y0), (x1 - dx, y1), (x1, y1)]
    if through:
        ctrl += [(x1, y1), (bx + node_w, y1), (bx + node_w, y1)]
    return _Edge(tuple(ctrl), arrow=not through)


def _corner(shape: _Shape) -> Point:
    if isinstance(shape, _Box):
        return shape.at[0] + shape.size[0], shape.at[1] + shape.size[1]
    if isinstance(shape, _Text):
        return shape.at[0] + _text_w(shape.text, shape.size), shape.at[1]
    return shape.ctrl[-1][0] + ARROW * shape.arrow, shape.ctrl[-1][1]


def _scene(nodes: list[GraphNode], title: str) -> tuple[float, float, list[_Shape]]:
    """Width, height and the shapes (back to front) of the drawing of ``nodes``."""
    layers, hops = _layered(nodes)
    longest = max((max(len(n.id), len(n.label)) for n in nodes), default=0)
    node_w = min(260.0, max(110.0, _text_w("x" * longest, ID_SIZE) + 2 * PAD))
    head: list[_Shape] = [_Text((MARGIN, MARGIN + TITLE_SIZE), title, TITLE_SIZE, bold=True)]
    legend = _legend(nodes, MARGIN + (TITLE_H if title else 0))
    top = MARGIN + (TITLE_H if title else 0) + (LEGEND_H if legend else 0)
    boxes = _boxes(layers, node_w, top)
    shapes = [
        *(head if title else []),
        *legend,
        *(_hop(a, b, boxes, node_w) for a, b in hops),
        *(shape for node in nodes for shape in _node_shapes(node, boxes[node.id], node_w)),
    ]
    corners = [_corner(shape) for shape in shapes]
    width = max((x for x, _ in corners), default=0.0) + MARGIN
    return width, max((y for _, y in corners), default=0.0) + MARGIN, shapes


def _arrow(end: Point) -> list[Point]:
    x, y = end
    return [(x, y - ARROW / 2), (x + ARROW, y), (x, y + ARROW / 2)]


def _bezier(ctrl: Sequence[Point], steps: int = 16) -> list[Point]:
    """Points along one cubic Bézier segment (4 control points)."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = ctrl
    ts = (i / steps for i in range(steps + 1))
    weights = [((1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t**3) for t in ts]
    return [
        (a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3)
        for a, b, c, d in weights
    ]


def _xml(text: str) -> str:
    return html.escape(re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", text), quote=True)


def _num(points: Iterable[Point]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def _svg(shape: _Shape) -> str:
    if isinstance(shape, _Box):
        (x, y), (w, h), style = shape.at, shape.size, shape.style
        return (
            f'<rect class="{shape.cls}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'rx="{h / 8:.1f}" fill="{style.fill}" stroke="{style.stroke}" stroke-width="1.5">'
            f"<title>{_xml(shape.tip)}</title></rect>"
        )
    if isinstance(shape, _Text):
        weight = ' font-weight="bold"' if shape.bold else ""
        return (
            f'<text x="{shape.at[0]:.1f}" y="{shape.at[1]:.1f}" font-size="{shape.size}" '
            f'fill="{shape.colour}"{weight}>{_xml(shape.text)}</text>'
        )
    start, *rest = shape.ctrl
    cls, paint = "edge" if shape.arrow else "edge-part", f'stroke="{EDGE_COLOUR}" fill="none"'
    path = f'<path class="{cls}" d="M{_num([start])} C{_num(rest)}" {paint} stroke-width="1.2"/>'
    arrow = f'<polygon class="arrow" points="{_num(_arrow(rest[-1]))}" fill="{EDGE_COLOUR}"/>'
    return path + arrow if shape.arrow else path


def to_svg(nodes: list[GraphNode], title: str = "") -> str:
    """A standalone SVG document of the DAG, drawn left to right by our own layout.

    Each step is a ``rect.node``, each dependency a ``path.edge`` plus arrowhead;
    a legend of the statuses present is drawn when any status is set.
    """
    width, height, shapes = _scene(nodes, title)
    w, h = f"{width:.0f}", f"{height:.0f}"
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="Helvetica, Arial, sans-serif">',
        f"<title>{_xml(title or 'workflow')}</title>",
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        *(_svg(shape) for shape in shapes),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


class _Canvas:
    """A Pillow image that paints scene shapes, scaled so no side exceeds MAX_PNG_SIDE."""

    def __init__(self, width: float, height: float) -> None:
        self.k = min(1.0, MAX_PNG_SIDE / max(width, height, 1.0))
        size = (max(1, round(width * self.k)), max(1, round(height * self.k)))
        self.image = Image.new("RGB", size, "#ffffff")
        self.draw = ImageDraw.Draw(self.image)

    def pts(self, points: Iterable[Point]) -> list[Point]:
        return [(x * self.k, y * self.k) for x, y in points]

    def paint(self, shape: _Shape) -> None:
        k = self.k
        if isinstance(shape, _Box):
            (x, y), (w, h) = shape.at, shape.size
            box = (x * k, y * k, (x + w) * k, (y + h) * k)
            width = max(1, round(1.5 * k))
            self.draw.rounded_rectangle(box, h * k / 8, shape.style.fill, shape.style.stroke, width)
        elif isinstance(shape, _Text):
            if round(shape.size * k) >= MIN_PNG_FONT:
                font = _font(round(shape.size * k))
                self.draw.text(self.pts([shape.at])[0], shape.text, shape.colour, font, "ls")
        else:
            ctrl = shape.ctrl
            line = [p for i in range(0, len(ctrl) - 1, 3) for p in _bezier(ctrl[i : i + 4])]
            self.draw.line(self.pts(line), EDGE_COLOUR, max(1, round(k)))
            if shape.arrow:
                self.draw.polygon(self.pts(_arrow(ctrl[-1])), EDGE_COLOUR)


def to_png(nodes: list[GraphNode], title: str = "") -> bytes:
    """PNG bytes of the same drawing as :func:`to_svg` (Pillow's default font).

    Very large graphs are scaled down so no side exceeds ``MAX_PNG_SIDE`` pixels;
    text too small to read at that scale is left out.
    """
    width, height, shapes = _scene(nodes, title)
    canvas = _Canvas(width, height)
    for shape in shapes:
        canvas.paint(shape)
    buffer = io.BytesIO()
    canvas.image.save(buffer, "PNG")
    return buffer.getvalue()
