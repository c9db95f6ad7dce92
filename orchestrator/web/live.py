"""A run page's live part (status, actions, DAG, steps, timeline, events) as server-sent
events: re-rendered from the run model every second, sent when it changed, until the run ends.

The page names what it already shows (``seen``, a fingerprint), so an unchanged run sends
nothing; once the run has ended its last state is sent with an ``end`` event, on which the
page's htmx SSE extension closes the stream (``sse-close``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from orchestrator.web import api
from orchestrator.web.charts import timeline_svg
from orchestrator.web.model import Run
from orchestrator.web.render import fragment
from orchestrator.web.runs import dag_svg

router = APIRouter(include_in_schema=False)
EVERY = 1.0  # seconds between looks at the run
LONGEST = 600.0  # seconds a stream lasts; the browser then connects again


def run_views(found: Run) -> dict[str, Any]:
    """What the run page and its live updates render."""
    views: dict[str, Any] = {
        "run": found,
        "dag": dag_svg(found.steps),
        "timeline": timeline_svg(found),
        "live": not found.status.terminal,
    }
    views["seen"] = fingerprint(views)
    return views


def fingerprint(views: dict[str, Any]) -> str:
    body = views["run"].model_dump_json() + views["dag"] + views["timeline"]
    return hashlib.sha256(body.encode()).hexdigest()[:20]


def event(name: str, data: str) -> str:
    """One server-sent event (each line of ``data`` on a ``data:`` line of its own)."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


@router.get("/runs/{run_id}/live")
async def live(request: Request, run_id: str, seen: str = "") -> StreamingResponse:
    first = await run_in_threadpool(api.get_run, request, run_id)  # unknown run: 404 at once
    return StreamingResponse(
        _changes(request, run_id, first, seen),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _changes(request: Request, run_id: str, found: Run, seen: str) -> AsyncIterator[str]:
    deadline = time.monotonic() + LONGEST
    while True:
        views = run_views(found)
        if views["seen"] != seen:
            seen = views["seen"]
            yield event("run", fragment(request, "_run_live.html", **views))
        if found.status.terminal:
            yield event("end", "")
            return
        if time.monotonic() > deadline or await request.is_disconnected():
            return
        await asyncio.sleep(EVERY)
        found = await run_in_threadpool(api.get_run, request, run_id)
