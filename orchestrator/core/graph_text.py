"""A workflow DAG as text: Mermaid and Graphviz DOT source, or a terminal drawing.

Mermaid and DOT leave the layout to their own tools; the terminal drawing lists the steps layer
by layer in the order of :func:`orchestrator.core.graph_layout.layout`.
"""

from __future__ import annotations

import html
import json

from orchestrator.core.graph_layout import (
    EDGE_COLOUR,
    STATUSES,
    STYLES,
    GraphNode,
    edges,
    index,
    layered,
    parents_of,
    step_layers,
    style_of,
)


def _mermaid_text(text: str) -> str:
    return "".join(c if c.isalnum() or c in " -_.:/,()" else f"#{ord(c)};" for c in text)


def to_mermaid(nodes: list[GraphNode], title: str = "") -> str:
    """Mermaid ``flowchart LR`` source, one ``classDef`` per status.

    Steps get safe synthetic ids (``n0``, ``n1``...); the real id and label are
    shown in the quoted, entity-escaped box text.
    """
    index(nodes)
    ids = {node.id: f"n{i}" for i, node in enumerate(nodes)}
    lines = [f"---\ntitle: {json.dumps(title)}\n---"] if title else []
    lines.append("flowchart LR")
    for node in nodes:
        text = f"<b>{_mermaid_text(node.id)}</b><br/><small>{_mermaid_text(node.label)}</small>"
        cls = f":::{node.status}" if node.status in STATUSES else ""
        lines.append(f'    {ids[node.id]}["{text}"]{cls}')
    lines += [f"    {ids[parent]} --> {ids[child]}" for parent, child in edges(nodes)]
    lines += [f"    classDef {s} fill:{STYLES[s].fill},stroke:{STYLES[s].stroke}" for s in STATUSES]
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_node(node: GraphNode) -> str:
    style = style_of(node.status)
    small = f'<font point-size="10">{html.escape(node.label)}</font>'
    label = f"<<b>{html.escape(node.id)}</b><br/>{small}>"
    attrs = f'label={label}, fillcolor="{style.fill}", color="{style.stroke}"'
    return f"  {_dot_str(node.id)} [{attrs}];"


def to_dot(nodes: list[GraphNode], title: str = "") -> str:
    """Graphviz DOT source (left to right), boxes filled by status."""
    index(nodes)
    lines = [
        "digraph workflow {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
        f'  edge [color="{EDGE_COLOUR}"];',
    ]
    if title:
        lines += [f"  label={_dot_str(title)};", "  labelloc=t;"]
    lines += [_dot_node(node) for node in nodes]
    lines += [f"  {_dot_str(p)} -> {_dot_str(c)};" for p, c in edges(nodes)]
    return "\n".join([*lines, "}"]) + "\n"


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def to_text(nodes: list[GraphNode], color: bool = False) -> str:
    """Terminal drawing: one block per layer, each step as ``marker id  label  ← parents``.

    ANSI colours are used only when ``color`` is true.
    """
    by_id = index(nodes)
    width = max((len(node.id) for node in nodes), default=0)
    lines: list[str] = []
    for li, layer in enumerate(step_layers(layered(nodes)[0])):
        lines.append(_paint(f"layer {li}", "1", color))
        for nid in layer:
            node, style = by_id[nid], style_of(by_id[nid].status)
            head = _paint(f"{style.marker} {nid.ljust(width)}", style.ansi, color)
            tail = f"  ← {', '.join(parents_of(node))}" if node.parents else ""
            lines.append(f"  {head}  {node.label}{tail}".rstrip())
    return "\n".join(lines) + "\n"
