"""The console with 1,000,000 runs in history: p50 and p95 response times of the runs page and
of the API's run list, as a browser or a script asks for them.

Run ``python bench/bench_console.py [--runs N] [--requests N]`` from the project root with
PostgreSQL on ``ORCHESTRATOR_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``). The script creates its own database (``orchestrator_bench_console``), migrates it,
and fills it in a few ``INSERT ... SELECT generate_series`` statements: runs of five workflows
over the last 30 days (90% succeeded, 7% failed, 2% cancelled, 1% running), one in ten with an
idempotency key and one in five with a correlation id, and three steps for each of the newest
20,000. Then it serves the console with uvicorn on a free port of 127.0.0.1 and asks each
listing ``--requests`` times in a row over one keep-alive connection (after 5 unmeasured
requests), with HTTP basic auth, as the pages and the API are asked: the first page, a page
100 pages deep (by its cursor), filtered by workflow, status, both, a time range, and found by
run id prefix, correlation id and idempotency key. The database is dropped at the end
(``--keep`` keeps it, and a later run with ``--keep`` reuses it without filling it again).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import psycopg
import uvicorn
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from orchestrator.app import create_app
from orchestrator.settings import Settings
from orchestrator.stores.postgres.migrate import upgrade
from orchestrator.web import create_console

DATABASE = "orchestrator_bench_console"
AUTH = "bench:" + base64.b16encode(os.urandom(8)).decode()
WORKFLOWS = 5
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"

FILL = """
INSERT INTO workflow_specs (version, workflow, spec)
SELECT 'bench' || w, 'wf_' || w, jsonb_build_object('name', 'wf_' || w, 'steps', jsonb_build_array(
    jsonb_build_object('id', 'a', 'task', 'bench.a'),
    jsonb_build_object('id', 'b', 'task', 'bench.b', 'after', jsonb_build_array('a')),
    jsonb_build_object('id', 'c', 'task', 'bench.c', 'after', jsonb_build_array('a'))))
FROM generate_series(0, {workflows} - 1) w;

INSERT INTO workflow_runs (id, workflow, workflow_version, status, inputs, trigger,
    idempotency_key, correlation_id, done_steps, recoveries, published_at, created_at,
    started_at, finished_at, error, error_step)
SELECT gen_random_uuid(), 'wf_' || (i % {workflows}), 'bench' || (i % {workflows}),
    CASE WHEN i % 100 < 90 THEN 'succeeded' WHEN i % 100 < 97 THEN 'failed'
         WHEN i % 100 < 99 THEN 'cancelled' ELSE 'running' END,
    jsonb_build_object('n', i), 'api',
    CASE WHEN i % 10 = 0 THEN 'key-' || i END,
    CASE WHEN i % 5 = 0 THEN 'order-' || (i / 5) END,
    '[]', '[]', t, t, t, t + interval '3 seconds',
    CASE WHEN i % 100 BETWEEN 90 AND 96 THEN 'ValueError: bad row' END,
    CASE WHEN i % 100 BETWEEN 90 AND 96 THEN 'b' END
FROM (SELECT i, now() - i * (interval '30 days' / {runs}) AS t
      FROM generate_series(0, {runs} - 1) i) s;

INSERT INTO task_runs (run_id, step_id, task_name, celery_task_id, status, attempts,
    queued_at, started_at, finished_at)
SELECT r.id, s.step, 'bench.' || s.step, gen_random_uuid()::text, 'succeeded', 1,
    r.created_at, r.created_at + s.o * interval '1 second',
    r.created_at + s.o * interval '1 second' + (random() * 2) * interval '1 second'
FROM (SELECT id, created_at FROM workflow_runs ORDER BY created_at DESC LIMIT 20000) r,
     (VALUES ('a', 0), ('b', 1), ('c', 1)) s(step, o);
"""


def admin_url(base: str) -> str:
    return make_url(base).set(database="postgres").render_as_string(hide_password=False)


def bench_url(base: str) -> str:
    return make_url(base).set(database=DATABASE).render_as_string(hide_password=False)


def fill(url: str, runs: int) -> float:
    """Migrate and fill the database; seconds it took."""
    started = time.perf_counter()
    upgrade(Settings(database_url=url).sqlalchemy_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FILL.format(runs=runs, workflows=WORKFLOWS))  # type: ignore[arg-type]
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def filled(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM workflow_runs").fetchone()
    return int(row[0]) if row else 0


def serve(url: str) -> tuple[uvicorn.Server, int]:
    settings = Settings(database_url=url, ui_auth=SecretStr(AUTH), task_modules=[])
    console = create_console(create_app(settings, "bench-console"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(console, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


class Client:
    """One keep-alive HTTP connection with basic auth."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}

    def get(self, path: str) -> bytes:
        self.conn.request("GET", path, headers=self.headers)
        answer = self.conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status} {body[:300]!r}")
        return body

    def next_cursor(self, query: dict[str, str], pages: int) -> str:
        """The cursor of the page ``pages`` pages after the first."""
        cursor = ""
        for _ in range(pages):
            asked = {**query, "after": cursor} if cursor else query
            cursor = json.loads(self.get("/api/v1/runs?" + urlencode(asked)))["next"]
        return cursor


def timed(call: Callable[[], object], requests: int) -> tuple[float, float]:
    for _ in range(5):
        call()
    took = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), statistics.quantiles(took, n=20)[18]


def scenarios(client: Client, url: str) -> dict[str, dict[str, str]]:
    with psycopg.connect(url) as conn:
        some = conn.execute(
            "SELECT id::text, correlation_id, idempotency_key FROM workflow_runs "
            "WHERE correlation_id IS NOT NULL AND idempotency_key IS NOT NULL "
            "ORDER BY created_at LIMIT 1 OFFSET 1000"
        ).fetchone()
    assert some is not None
    week = datetime.now(UTC) - timedelta(days=7)
    return {
        "first page": {},
        "100 pages deep": {"after": client.next_cursor({}, 100)},
        "workflow": {"workflow": "wf_3"},
        "status failed": {"status": "failed"},
        "workflow + status": {"workflow": "wf_2", "status": "cancelled"},
        "a day a week ago": {
            "since": week.isoformat(),
            "until": (week + timedelta(days=1)).isoformat(),
        },
        "run id prefix": {"q": some[0][:8]},
        "correlation id": {"q": some[1]},
        "idempotency key": {"q": some[2]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="keep (and reuse) the database")
    args = parser.parse_args()
    base = os.environ.get("ORCHESTRATOR_DATABASE_URL", DEFAULT_SERVER)
    url = bench_url(base)
    with psycopg.connect(admin_url(base), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        exists = found.fetchone() is not None
        if exists and not args.keep:
            conn.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')  # type: ignore[arg-type]
    try:
        if exists and args.keep and filled(url):
            print(f"reusing {DATABASE}")
        else:
            print(f"filling {DATABASE} with {args.runs:,} runs ...", flush=True)
            print(f"filled in {fill(url, args.runs):.0f}s")
        print(f"{filled(url):,} runs in history\n")
        server, port = serve(url)
        client = Client(port)
        heads = ("page p50", "page p95", "api p50", "api p95")
        print(f"{'listing (ms)':<20}" + "".join(f"{h:>10}" for h in heads))
        for name, query in scenarios(client, url).items():
            qs = urlencode(query)
            page = timed(lambda qs=qs: client.get("/runs?" + qs), args.requests)
            api = timed(lambda qs=qs: client.get("/api/v1/runs?" + qs), args.requests)
            print(f"{name:<20}" + "".join(f"{v:10.1f}" for v in (*page, *api)))
        server.should_exit = True
    finally:
        if not args.keep:
            with psycopg.connect(admin_url(base), autocommit=True) as conn:
                drop = f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'
                conn.execute(drop)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
