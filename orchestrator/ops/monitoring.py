"""The worker's monitoring endpoint: ``/metrics``, ``/health`` and ``/ready`` over HTTP.

It runs in a thread of the worker's main process only (started on ``worker_ready`` when
``ORCHESTRATOR_METRICS_PORT`` is set, stopped on ``worker_shutdown``); the prefork children
serve nothing. ``/health`` answers 200 while the process is alive; ``/ready`` answers 200 when
the broker and PostgreSQL both answer, else 503, with a JSON body naming each check's outcome.
Metrics come from the history tables (:mod:`orchestrator.ops.metrics`), so they are exact whichever
process or host ran the steps.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, text

from orchestrator.logs import scrub
from orchestrator.ops.metrics import HistoryCollector
from orchestrator.ops.queue_depth import queue_source
from orchestrator.settings import Settings, redact
from orchestrator.stores.redis.breakers import RedisBreakerStore
from orchestrator.stores.redis.rate_limits import RedisRateLimits
from orchestrator.stores.redis.workers import WorkerRegistry

log = logging.getLogger("orchestrator.monitoring")
Check = Callable[[], None]
PROBE_TIMEOUT = 3  # seconds each readiness check may take


class Probes:
    """Readiness checks against the broker and PostgreSQL, each with a short timeout."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        """This process's small engine for probes and metrics (created on first use)."""
        with self._lock:
            if self._engine is None:
                self._engine = create_engine(
                    self.settings.sqlalchemy_url,
                    pool_size=2,
                    max_overflow=2,
                    pool_pre_ping=True,
                    connect_args={
                        "connect_timeout": PROBE_TIMEOUT,
                        "options": "-c statement_timeout=10000",
                    },
                )
            return self._engine

    def broker(self) -> None:
        with self.app.connection_for_write(connect_timeout=PROBE_TIMEOUT) as conn:
            conn.ensure_connection(max_retries=0, timeout=PROBE_TIMEOUT)

    def database(self) -> None:
        with self.engine().connect() as conn:
            conn.execute(text("SELECT 1"))

    def run(self) -> tuple[bool, dict[str, str]]:
        """(all passed, check name -> ``ok`` or why it failed); secrets masked."""
        results: dict[str, str] = {}
        for name, check in (("broker", self.broker), ("database", self.database)):
            try:
                check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = self._describe(exc)
        return all(v == "ok" for v in results.values()), results

    def _describe(self, exc: BaseException) -> str:
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        for url in (self.settings.broker_url, self.settings.database_url):
            message = message.replace(url, redact(url))
        return scrub(f"failed: {type(exc).__name__}: {message}")

    def dispose(self, close: bool = True) -> None:
        if self._engine is not None:
            self._engine.dispose(close=close)
        self._engine = None


class ReadinessCollector(Collector):
    """``orchestrator_worker_ready``: 1 when this worker's /ready would answer 200."""

    def __init__(self, probes: Probes) -> None:
        self.probes = probes

    def collect(self) -> Iterator[Metric]:
        ready, _ = self.probes.run()
        yield GaugeMetricFamily(
            "orchestrator_worker_ready",
            "1 when this worker reaches its broker and database.",
            value=1.0 if ready else 0.0,
        )


def breaker_source(url: str) -> Callable[[], Iterable[tuple[str, str]]]:
    """(name, state) of every circuit breaker recorded in Redis at ``url``."""
    store = RedisBreakerStore(redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT))
    return lambda: [(name, store.get(name).state) for name in store.names()]


def rate_limit_source(url: str) -> Callable[[], Iterable[tuple[str, int]]]:
    """(key, deferrals) of every rate-limit key that deferred a step, from Redis at ``url``."""
    store = RedisRateLimits(redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT))
    return lambda: sorted(store.deferrals().items())


def build_registry(probes: Probes) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    url = probes.settings.state_url
    workers = WorkerRegistry(redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT))
    registry.register(
        HistoryCollector(
            probes.engine,
            breaker_source(url),
            rate_limit_source(url),
            queues=queue_source(probes.app, workers),
        )
    )
    registry.register(ReadinessCollector(probes))
    return registry


def _handler(registry: CollectorRegistry, probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/health":
                self._json(200, {"status": "alive", "pid": os.getpid()})
            elif path == "/ready":
                ready, checks = probes.run()
                self._json(
                    200 if ready else 503,
                    {"status": "ready" if ready else "not ready", "checks": checks},
                )
            else:
                self._json(404, {"error": f"no such path {path!r}; try /metrics, /health, /ready"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("monitoring %s: " + format, self.client_address[0], *args)

    return Handler


class MonitoringServer:
    """The HTTP endpoint in a daemon thread of the process that started it."""

    def __init__(self, app: Any, settings: Settings, host: str, port: int) -> None:
        self.probes = Probes(app, settings)
        handler = _handler(build_registry(self.probes), self.probes)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.pid = os.getpid()
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="orchestrator-monitoring", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()
        log.info(
            "monitoring on http://%s:%d (/metrics, /health, /ready)",
            self.httpd.server_address[0],
            self.port,
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.probes.dispose()

    def abandon(self) -> None:
        """In a forked child: close the inherited socket and pool, leaving the parent's alone."""
        self.httpd.socket.close()
        self.probes.dispose(close=False)


_server: MonitoringServer | None = None
_server_lock = threading.Lock()
DEFAULT_HOST = "127.0.0.1"


def start(app: Any, settings: Settings, host: str = DEFAULT_HOST) -> MonitoringServer | None:
    """Serve the endpoint when ``settings.metrics_port`` is set (once per process)."""
    global _server
    if settings.metrics_port is None:
        return None
    with _server_lock:
        if _server is None or _server.pid != os.getpid():
            _server = MonitoringServer(app, settings, host, settings.metrics_port)
            _server.start()
        return _server


def stop() -> None:
    """Stop the endpoint this process started (worker shutdown)."""
    global _server
    with _server_lock:
        if _server is not None and _server.pid == os.getpid():
            _server.stop()
        _server = None


def forget_inherited() -> None:
    """A pool child forked after the endpoint started lets go of the parent's socket."""
    global _server
    with _server_lock:
        if _server is not None and _server.pid != os.getpid():
            _server.abandon()
            _server = None
