"""Unit tests for core.graph_layout, graph_text and graph_drawing: a DAG laid out and drawn."""

from __future__ import annotations

import io
import re
import time
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from orchestrator.core.graph_drawing import MAX_PNG_SIDE, to_png, to_svg
from orchestrator.core.graph_layout import STATUSES, STYLES, GraphNode, layout
from orchestrator.core.graph_text import to_dot, to_mermaid, to_text

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def diamond() -> list[GraphNode]:
    return [
        GraphNode("extract", "tasks.etl.extract", (), "succeeded"),
        GraphNode("clean-data", "tasks.etl.clean", ("extract",), "failed"),
        GraphNode("geo.lookup", "tasks.geo.lookup", ("extract",), "running"),
        GraphNode("merge_all", "tasks.etl.merge", ("clean-data", "geo.lookup"), "pending"),
    ]


def n_shaped() -> list[GraphNode]:
    return [
        GraphNode("a", "t.a", ()),
        GraphNode("b", "t.b", ()),
        GraphNode("c", "t.c", ("a",)),
        GraphNode("d", "t.d", ("a", "b")),
    ]


def fan(width: int = 500) -> list[GraphNode]:
    middle = [GraphNode(f"s-{i}", f"tasks.step_{i}", ("root",), "succeeded") for i in range(width)]
    sink = GraphNode("sink", "tasks.sink", tuple(n.id for n in middle), "failed")
    return [GraphNode("root", "tasks.root", (), "succeeded"), *middle, sink]


def edges_of(nodes: list[GraphNode]) -> set[tuple[str, str]]:
    return {(p, n.id) for n in nodes for p in n.parents}


def mermaid_graph(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Real id per mermaid node id, and the edges as real ids."""
    names = dict(re.findall(r'^\s+(n\d+)\["<b>(.*?)</b>', text, re.MULTILINE))
    arrows = re.findall(r"^\s+(n\d+) --> (n\d+)$", text, re.MULTILINE)
    return names, {(names[a], names[b]) for a, b in arrows}


def svg_tree(nodes: list[GraphNode], title: str = "") -> ET.Element:
    return ET.fromstring(to_svg(nodes, title).encode())


def svg_elements(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == cls]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


# --- mermaid ----------------------------------------------------------------------------------


def test_mermaid_has_every_node_edge_and_status_class() -> None:
    # Given a diamond with statuses
    nodes = diamond()
    # When it is drawn as mermaid
    text = to_mermaid(nodes, title="ETL run")
    # Then it is a left-to-right flowchart with every step, every edge and a class per status
    assert "flowchart LR" in text
    assert 'title: "ETL run"' in text
    names, edges = mermaid_graph(text)
    assert sorted(names.values()) == sorted(n.id for n in nodes)
    assert edges == edges_of(nodes)
    for status in STATUSES:
        assert f"classDef {status} fill:{STYLES[status].fill}" in text
    failed = next(k for k, v in names.items() if v == "clean-data")
    assert re.search(rf"^\s+{failed}\[.*\]:::failed$", text, re.MULTILINE)


def test_mermaid_escapes_special_characters() -> None:
    # Given a label with quotes, brackets and markup
    nodes = [GraphNode("a.b-c_d", 'tasks.x("<y>" & #z)', ())]
    # When it is drawn as mermaid
    text = to_mermaid(nodes)
    # Then the quoted box text holds no raw quote or markup and the id survives
    line = next(line for line in text.splitlines() if line.strip().startswith("n0["))
    inner = line.split('["', 1)[1].rsplit('"]', 1)[0]
    assert '"' not in inner and "&" not in inner and "<y>" not in inner
    assert "a.b-c_d" in inner and "#34;" in inner and "#60;y#62;" in inner


# --- dot --------------------------------------------------------------------------------------


def test_dot_has_every_node_edge_and_status_fill() -> None:
    # Given a diamond with statuses
    nodes = diamond()
    # When it is drawn as DOT
    text = to_dot(nodes, title="ETL run")
    # Then every step has a node with its status fill and every dependency an edge
    assert text.startswith("digraph") and "rankdir=LR" in text
    for node in nodes:
        style = STYLES[node.status]
        assert re.search(rf'^  "{re.escape(node.id)}" \[.*fillcolor="{style.fill}"', text, re.M)
    for parent, child in edges_of(nodes):
        assert f'  "{parent}" -> "{child}";' in text
    assert text.count(" -> ") == len(edges_of(nodes))


def test_dot_escapes_quotes_and_html() -> None:
    # Given an id with a quote and a label with markup
    nodes = [GraphNode('say"hi', "t.<b>&", ())]
    # When it is drawn as DOT
    text = to_dot(nodes, title='a "title"')
    # Then the quote is backslash-escaped and the label is entity-escaped
    assert '"say\\"hi"' in text
    assert "t.&lt;b&gt;&amp;" in text
    assert 'label="a \\"title\\""' in text


# --- svg --------------------------------------------------------------------------------------


def test_svg_has_one_box_per_node_and_one_path_per_edge() -> None:
    # Given a diamond with statuses
    nodes = diamond()
    # When it is drawn as SVG
    root = svg_tree(nodes, title="ETL <run> & co")
    # Then it parses, with a box per step, a path and arrowhead per edge, and the texts
    assert root.tag == f"{SVG}svg"
    assert len(svg_elements(root, "rect", "node")) == len(nodes)
    assert len(svg_elements(root, "path", "edge")) == len(edges_of(nodes))
    assert len(svg_elements(root, "polygon", "arrow")) == len(edges_of(nodes))
    texts = {e.text for e in root.iter(f"{SVG}text")}
    assert {n.id for n in nodes} <= texts
    assert {n.label for n in nodes} <= texts
    assert "ETL <run> & co" in texts


def test_svg_box_colours_come_from_the_status_table() -> None:
    # Given a diamond with statuses
    nodes = diamond()
    # When it is drawn as SVG
    boxes = svg_elements(svg_tree(nodes), "rect", "node")
    # Then each box is filled and stroked per its status (tooltip names the step)
    by_id = {box.findtext(f"{SVG}title"): box for box in boxes}
    for node in nodes:
        assert by_id[node.id].get("fill") == STYLES[node.status].fill
        assert by_id[node.id].get("stroke") == STYLES[node.status].stroke


def test_svg_legend_only_when_statuses_are_set() -> None:
    # Given a graph with statuses and one without
    # When both are drawn as SVG
    with_status = svg_tree(diamond())
    without = svg_tree(n_shaped())
    # Then only the first has a legend, with one swatch per status present
    swatches = svg_elements(with_status, "rect", "swatch")
    assert [s.findtext(f"{SVG}title") for s in swatches] == [
        "pending",
        "running",
        "succeeded",
        "failed",
    ]
    assert svg_elements(without, "rect", "swatch") == []


def test_svg_long_edge_goes_through_a_waypoint() -> None:
    # Given a -> b -> c plus a -> c, which skips a layer
    nodes = [GraphNode("a", "t", ()), GraphNode("b", "t", ("a",)), GraphNode("c", "t", ("b", "a"))]
    # When it is drawn as SVG
    root = svg_tree(nodes)
    # Then there is still one arrowed path per edge, plus one path into the waypoint
    assert len(svg_elements(root, "path", "edge")) == 3
    assert len(svg_elements(root, "path", "edge-part")) == 1


# --- png --------------------------------------------------------------------------------------


def test_png_is_a_png_of_sensible_size() -> None:
    # Given a diamond with statuses
    nodes = diamond()
    # When it is drawn as PNG
    data = to_png(nodes, title="ETL run")
    # Then it has the PNG signature, opens with Pillow and is wider than tall (3 columns)
    assert data.startswith(PNG_SIGNATURE)
    width, height = png_size(data)
    assert 400 < width < 2000
    assert 100 < height < width


def test_png_of_an_empty_graph_still_opens() -> None:
    # Given no steps
    # When they are drawn as PNG and SVG
    data = to_png([])
    # Then both are valid, small documents
    assert png_size(data)[0] >= 1
    assert svg_elements(svg_tree([]), "rect", "node") == []


# --- layout -----------------------------------------------------------------------------------


def test_layout_of_a_diamond_is_longest_path_ranks() -> None:
    # Given a diamond
    nodes = diamond()
    # When it is laid out
    where = layout(nodes)
    # Then the layers are the longest paths from the root and positions are dense
    assert {nid: layer for nid, (layer, _) in where.items()} == {
        "extract": 0,
        "clean-data": 1,
        "geo.lookup": 1,
        "merge_all": 2,
    }
    assert sorted(where[n][1] for n in ("clean-data", "geo.lookup")) == [0, 1]


def test_layout_of_an_n_shaped_dag() -> None:
    # Given a -> c, a -> d, b -> d
    nodes = n_shaped()
    # When it is laid out
    where = layout(nodes)
    # Then the roots are layer 0, the rest layer 1, ordered without crossings
    assert where == {"a": (0, 0), "b": (0, 1), "c": (1, 0), "d": (1, 1)}


def test_layout_rank_is_the_longest_not_the_shortest_path() -> None:
    # Given a -> b -> c and a -> c
    nodes = [GraphNode("a", "t", ()), GraphNode("b", "t", ("a",)), GraphNode("c", "t", ("a", "b"))]
    # When it is laid out
    where = layout(nodes)
    # Then c sits after b
    assert [where[n][0] for n in "abc"] == [0, 1, 2]


def test_layout_barycenter_removes_a_crossing() -> None:
    # Given two chains listed so that the second layer is in crossed order
    nodes = [
        GraphNode("a", "t", ()),
        GraphNode("b", "t", ()),
        GraphNode("y", "t", ("b",)),
        GraphNode("x", "t", ("a",)),
    ]
    # When it is laid out
    where = layout(nodes)
    # Then each child sits level with its parent
    assert where["x"] == (1, where["a"][1])
    assert where["y"] == (1, where["b"][1])


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([GraphNode("a", "t", ("b",)), GraphNode("b", "t", ("a",))], "cycle"),
        ([GraphNode("a", "t", ("ghost",))], "unknown step 'ghost'"),
        ([GraphNode("a", "t", ()), GraphNode("a", "t", ())], "duplicate"),
    ],
)
def test_layout_rejects_bad_graphs(nodes: list[GraphNode], message: str) -> None:
    # Given a graph with a cycle, an unknown parent or a duplicate id
    # When it is laid out
    # Then a ValueError says what is wrong
    with pytest.raises(ValueError, match=message):
        layout(nodes)


# --- text -------------------------------------------------------------------------------------


def test_text_lists_every_step_with_marker_and_parents() -> None:
    # Given a diamond with statuses
    nodes = diamond()
    # When it is drawn as plain text
    text = to_text(nodes)
    # Then each layer is headed, each step has its marker, label and parents, and no ANSI codes
    assert "\x1b[" not in text
    assert [line for line in text.splitlines() if line.startswith("layer")] == [
        "layer 0",
        "layer 1",
        "layer 2",
    ]
    for node in nodes:
        line = next(line for line in text.splitlines() if f" {node.id} " in f"{line} ")
        assert line.lstrip().startswith(STYLES[node.status].marker)
        assert node.label in line
        if node.parents:
            assert line.endswith("← " + ", ".join(node.parents))


def test_text_markers_differ_per_status_and_colour_is_opt_in() -> None:
    # Given one step per status
    nodes = [GraphNode(status, "t", (), status) for status in STATUSES]
    # When it is drawn with and without colour
    plain, coloured = to_text(nodes), to_text(nodes, color=True)
    # Then each status has its own marker, and ANSI codes appear only when asked
    markers = [STYLES[s].marker for s in STATUSES]
    assert len(set(markers)) == len(STATUSES)
    for status, marker in zip(STATUSES, markers, strict=True):
        assert f"{marker} {status}" in plain
        assert f"\x1b[{STYLES[status].ansi}m{marker} {status}" in coloured


# --- scale ------------------------------------------------------------------------------------


def test_wide_fan_out_fan_in_renders_in_every_format() -> None:
    # Given a 500-wide fan-out/fan-in
    nodes = fan(500)
    # When it is drawn in the text formats and laid out
    started = time.perf_counter()
    mermaid, dot, text, where = to_mermaid(nodes), to_dot(nodes), to_text(nodes), layout(nodes)
    elapsed = time.perf_counter() - started
    # Then those are fast and complete
    assert elapsed < 1.0
    assert len(mermaid_graph(mermaid)[1]) == 1000
    assert dot.count(" -> ") == 1000
    assert text.count("\n") == 502 + 3
    assert where["sink"] == (2, 0) and {where[f"s-{i}"][0] for i in range(500)} == {1}
    # And the drawings are complete, with the PNG scaled down to a capped size
    root = svg_tree(nodes)
    assert len(svg_elements(root, "rect", "node")) == 502
    assert len(svg_elements(root, "path", "edge")) == 1000
    data = to_png(nodes)
    assert data.startswith(PNG_SIGNATURE)
    assert max(png_size(data)) <= MAX_PNG_SIDE
