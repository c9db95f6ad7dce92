"""``make demo``: run the example workflows on a real Celery worker, start to finish: ``etl``,
and ``ingest`` (a document ingestion with a ``for_each``, a child run per document, a map inside
it and a condition).

Without ORCHESTRATOR_* URLs it starts embedded Redis and PostgreSQL (data under
``.orchestrator/demo``); with them it uses those servers. It applies the migrations, starts
``celery -A orchestrator.worker worker -c 2``, runs each, prints the steps and the output, and
stops everything it started, on success, failure or Ctrl-C alike. Exit status 0 on success.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.app import create_app, set_default_app
from orchestrator.cli.output import duration, table
from orchestrator.dev.backends import Backends, migrate, open_backends, shown
from orchestrator.dev.server import worker_service
from orchestrator.dev.supervision import Service, interrupt_on_signals, stop_services, uninterrupted
from orchestrator.engine.handle import RunHandle
from orchestrator.errors import WorkflowFailed
from orchestrator.settings import get_settings, redact

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / ".orchestrator" / "demo"
EXAMPLES = [("etl", {"source": "s3://bucket/day"}), ("ingest", {"source": "s3://docs"})]
CONCURRENCY = 2
RUN_TIMEOUT = 60.0

_began = time.monotonic()


def say(text: str) -> None:
    print(f"[demo {time.monotonic() - _began:5.1f}s] {text}", flush=True)


def main() -> int:
    os.chdir(ROOT)  # the example tasks and config/workflows are found from the project root
    os.environ.setdefault("ORCHESTRATOR_WORKFLOWS_PATH", str(ROOT / "config" / "workflows"))
    cleanup = contextlib.ExitStack()
    with interrupt_on_signals():
        try:
            demo(cleanup)
            code = 0
        except KeyboardInterrupt:
            say("interrupted")
            code = 130
        except Exception as exc:  # report it, then stop everything all the same
            say(f"failed: {type(exc).__name__}: {exc}")
            code = 1
        finally:
            with uninterrupted():
                cleanup.close()
    say("done" if code == 0 else f"exit status {code}")
    return code


def demo(cleanup: contextlib.ExitStack) -> None:
    backends = open_backends(DATA_DIR, say=say)
    cleanup.callback(_stop_backends, backends)
    say(f"Redis {redact(backends.redis_url)}, PostgreSQL {redact(backends.database_url)}")
    say("applying the database migrations")
    migrate(backends.env)
    use_servers(backends.env)
    worker = worker_service(backends.env, DATA_DIR / "worker.log", CONCURRENCY, "demo")
    say(f"starting a worker: celery -A orchestrator.worker worker -c {CONCURRENCY}")
    cleanup.callback(_stop_worker, worker)
    worker.start()
    worker.await_ready()
    say(f"worker ready (log {shown(worker.log)})")
    for workflow, inputs in EXAMPLES:
        run_example(workflow, inputs)


def use_servers(env: dict[str, str]) -> None:
    """Point this process, which submits the run, at the worker's servers.

    Importing the example's tasks built the default app from the environment of that moment
    (the default broker), so a new default app is built from the new settings.
    """
    os.environ.update(env)
    get_settings.cache_clear()
    app = set_default_app(create_app(get_settings()))
    if app.conf.broker_url != env["ORCHESTRATOR_BROKER_URL"]:
        raise RuntimeError(f"the Celery app still uses {redact(app.conf.broker_url)}")


def run_example(workflow: str, inputs: dict[str, Any]) -> None:
    from orchestrator import run_workflow

    say(f"running workflow {workflow!r} with inputs {json.dumps(inputs)}")
    handle = run_workflow(workflow, inputs=inputs)
    say(f"run {handle.id} submitted; waiting for it to finish")
    try:
        output = handle.wait(timeout=RUN_TIMEOUT)
    except WorkflowFailed:
        print_steps(handle)
        raise
    record = handle.record()
    say(f"run {record.status} in {duration(record.started_at, record.finished_at)}:")
    print_steps(handle)
    print(f"output: {json.dumps(output, indent=2, default=str)}\n", flush=True)


def print_steps(handle: RunHandle) -> None:
    start = handle.record().started_at
    rows: list[tuple[Any, ...]] = [
        (
            s.step_id,
            s.task,
            s.status,
            s.attempts,
            _offset(start, s.started_at),
            duration(s.started_at, s.finished_at),
        )
        for s in handle.steps()
    ]
    print(f"\n{table(['step', 'task', 'status', 'attempts', 'started', 'took'], rows)}\n")


def _offset(start: Any, when: Any) -> str:
    """When a step started, counted from the run's start (``+12ms``)."""
    return "-" if start is None or when is None else "+" + duration(start, when)


def _stop_worker(worker: Service) -> None:
    if worker.proc is not None:
        say("stopping the worker")
        stop_services([worker])


def _stop_backends(backends: Backends) -> None:
    if backends.embedded is not None:
        say("stopping embedded Redis and PostgreSQL")
        backends.stop()


if __name__ == "__main__":
    sys.exit(main())
