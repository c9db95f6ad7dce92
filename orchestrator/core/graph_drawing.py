"""A workflow DAG drawn as SVG or PNG, by our own layout (no graphviz binary needed).

One scene of shapes (boxes, text, Bézier edges), placed by
:func:`orchestrator.core.graph_layout.layered`, is either emitted as SVG or painted with Pillow,
so both formats show the same picture.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import accumulate
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from orchestrator.core.graph_layout import (
    EDGE_COLOUR,
    STATUSES,
    STYLES,
    GraphNode,
    Slot,
    Style,
    layered,
    style_of,
)

Point = tuple[float, float]
NODE_H, COL_GAP, ROW_GAP, MARGIN, PAD, ARROW = 46.0, 70.0, 14.0, 20.0, 10.0, 8.0
ID_SIZE, LABEL_SIZE, TITLE_SIZE, TITLE_H, LEGEND_H = 13, 11, 16, 30.0, 26.0
TEXT_COLOUR, LABEL_COLOUR = "#212121", "#555555"
MAX_PNG_SIDE, MIN_PNG_FONT = 8000, 4


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
        _Box("node", at, (node_w, NODE_H), style_of(node.status), node.id),
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
    layers, hops = layered(nodes)
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
