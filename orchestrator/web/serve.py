"""Serving the console with uvicorn: on ``ORCHESTRATOR_UI_HOST`` (127.0.0.1) and
``ORCHESTRATOR_UI_PORT`` (8765), refusing to start without ``ORCHESTRATOR_UI_AUTH``."""

from __future__ import annotations

import logging

import uvicorn

from orchestrator.app import default_services
from orchestrator.web.app import create_console
from orchestrator.web.auth import Login

log = logging.getLogger("orchestrator.web")
GRACE = 3  # seconds open live streams get to end when the console stops


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the default app's console until interrupted; ``ConsoleRefused`` (before anything
    listens) without valid credentials."""
    services = default_services()
    settings = services.settings
    credentials = Login.from_settings(settings)
    services.load_modules()
    console = create_console(services.app, credentials)
    host, port = host or settings.ui_host, port or settings.ui_port
    log.info("console for user %s on http://%s:%d", credentials.user, host, port)
    config = uvicorn.Config(
        console,
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=GRACE,
    )
    uvicorn.Server(config).run()
