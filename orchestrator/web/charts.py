"""Runs, failures and step durations over time, and a run's timeline: the data, and each
drawn as a small SVG (no JavaScript, nothing fetched)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from html import escape

from pydantic import BaseModel

from orchestrator.core.graph_layout import style_of
from orchestrator.ports import RunHistory
from orchestrator.status import RunStatus
from orchestrator.web.model import Run

BUCKETS = 48
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720.0, 180.0, 48.0, 22.0, 24.0
Series = tuple[str, str, list[float]]  # name, colour, one value per bucket


class Bucket(BaseModel):
    at: datetime
    runs: dict[RunStatus, int]
    failed: int
    steps: int
    p50: float | None
    p95: float | None
    longest: float | None


class Charts(BaseModel):
    since: datetime
    bucket_seconds: int
    buckets: list[Bucket]


def charts(history: RunHistory, hours: float, now: datetime | None = None) -> Charts:
    """The last ``hours`` in at most ``BUCKETS`` buckets of whole minutes: runs created by
    status, and how long steps took (median, 95th percentile, longest)."""
    size = 60 * max(1, math.ceil(hours * 60 / BUCKETS))
    number = math.ceil(hours * 3600 / size)
    now = now or datetime.now(UTC)
    start = int(now.timestamp() // size * size) - (number - 1) * size
    since = datetime.fromtimestamp(start, UTC)
    slots = [since + timedelta(seconds=i * size) for i in range(number)]
    counts: dict[datetime, dict[RunStatus, int]] = {at: {} for at in slots}
    for count in history.run_counts(since, size):
        counts.setdefault(count.at, {})[count.status] = count.n
    taken = {d.at: d for d in history.step_durations(since, size)}
    return Charts(
        since=since,
        bucket_seconds=size,
        buckets=[
            Bucket(
                at=at,
                runs=counts[at],
                failed=counts[at].get(RunStatus.FAILED, 0),
                steps=taken[at].n if at in taken else 0,
                p50=taken[at].p50 if at in taken else None,
                p95=taken[at].p95 if at in taken else None,
                longest=taken[at].longest if at in taken else None,
            )
            for at in slots
        ],
    )


def runs_svg(data: Charts) -> str:
    series = [
        (str(s), style_of(s).stroke, [float(b.runs.get(s, 0)) for b in data.buckets])
        for s in RunStatus
        if any(b.runs.get(s) for b in data.buckets)
    ]
    return bars("runs started, by status", _labels(data), series, stacked=True)


def failures_svg(data: Charts) -> str:
    failed = [float(b.failed) for b in data.buckets]
    return bars("failed runs", _labels(data), [("failed", style_of("failed").stroke, failed)])


def durations_svg(data: Charts) -> str:
    p95 = [b.p95 or 0.0 for b in data.buckets]
    p50 = [b.p50 or 0.0 for b in data.buckets]
    series = [("p95", "#90caf9", p95), ("median", "#1e88e5", p50)]
    return bars("step durations (seconds)", _labels(data), series, stacked=False)


def _labels(data: Charts) -> list[str]:
    return [b.at.strftime("%m-%d %H:%M") for b in data.buckets]


def bars(title: str, labels: Sequence[str], series: list[Series], stacked: bool = False) -> str:
    """A bar chart: one bar per label, series stacked or drawn over each other."""
    n = max(1, len(labels))
    columns = [[values[i] for _, _, values in series] for i in range(len(labels))]
    top = max([sum(c) if stacked else max(c, default=0.0) for c in columns] + [1e-9])
    slot, scale = (WIDTH - LEFT) / n, (HEIGHT - BOTTOM - TOP) / top
    shapes: list[str] = []
    for i, column in enumerate(columns):
        below = 0.0
        for (_, colour, _), value in zip(series, column, strict=True):
            if value > 0:
                x, h = LEFT + i * slot + 1, value * scale
                y = HEIGHT - BOTTOM - h - below
                tip = f"{labels[i]}: {value:g}"
                shapes.append(_bar(x, y, max(slot - 2, 1), h, colour, tip))
                below += h if stacked else 0.0
    legend = "".join(
        _bar(LEFT + 160 + k * 90, 6, 10, 10, colour, name) + _text(LEFT + 174 + k * 90, 15, name)
        for k, (name, colour, _) in enumerate(series)
    )
    first, last = (labels[0], labels[-1]) if labels else ("", "")
    axis = (
        _text(4, TOP + 10, f"{top:.3g}")
        + _text(4, HEIGHT - BOTTOM, "0")
        + _text(LEFT, HEIGHT - 6, first)
        + _text(WIDTH, HEIGHT - 6, last, end=True)
    )
    return _svg(title, WIDTH + 8, HEIGHT, legend + axis + "".join(shapes))


def _bar(x: float, y: float, w: float, h: float, fill: str, tip: str, cls: str = "bar") -> str:
    return (
        f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'fill="{fill}"><title>{escape(tip)}</title></rect>'
    )


def _text(x: float, y: float, text: str, end: bool = False, size: int = 11) -> str:
    anchor = ' text-anchor="end"' if end else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{anchor}>{escape(text)}</text>'


def timeline_svg(run: Run, now: datetime | None = None) -> str:
    """Each step's attempts as bars on one time axis from the run's creation."""
    start = run.created_at
    ends = [a.finished_at or a.started_at for s in run.steps for a in s.attempt_log]
    end = max([e for e in ends if e is not None] + [run.finished_at or now or datetime.now(UTC)])
    span = max((end - start).total_seconds(), 1e-3)
    row, label_w = 22.0, 140.0
    scale = (WIDTH - label_w) / span
    shapes: list[str] = []
    for i, step in enumerate(run.steps):
        y = TOP + i * row
        shapes.append(_text(4, y + 14, step.step_id, size=12))
        for a in step.attempt_log:
            if a.started_at is None:
                continue
            x0 = (a.started_at - start).total_seconds() * scale
            x1 = ((a.finished_at or end) - start).total_seconds() * scale
            tip = f"{step.step_id} attempt {a.attempt}: {a.status}, {a.seconds or 0:.3f}s"
            colour = style_of(a.status).stroke
            shapes.append(
                _bar(label_w + x0, y + 3, max(x1 - x0, 2), row - 8, colour, tip, "attempt")
            )
    height = TOP + len(run.steps) * row + BOTTOM
    axis = _text(label_w, height - 6, "0s") + _text(WIDTH, height - 6, f"{span:.3g}s", end=True)
    return _svg("timeline", WIDTH + 8, height, axis + "".join(shapes), heading=False)


def _svg(title: str, width: float, height: float, body: str, heading: bool = True) -> str:
    shown = f'<text x="4" y="15" font-size="12" font-weight="bold">{escape(title)}</text>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        f'role="img"><title>{escape(title)}</title>{shown if heading else ""}{body}</svg>'
    )
