"""What the console serves from: one app's services, read as runs, workflows and operations,
acted on through the public API, behind one login."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from orchestrator.engine.services import Services
from orchestrator.web.actions import Actions
from orchestrator.web.auth import Login
from orchestrator.web.catalog import Catalog
from orchestrator.web.operations import Operations
from orchestrator.web.runs import RunReader


@dataclass(frozen=True)
class Console:
    services: Services
    login: Login
    runs: RunReader
    catalog: Catalog
    operations: Operations
    actions: Actions

    @classmethod
    def of(cls, services: Services, login: Login) -> Console:
        return cls(
            services,
            login,
            RunReader(services),
            Catalog(services),
            Operations(services),
            Actions(services),
        )


def console_of(request: Request) -> Console:
    found: Console = request.app.state.console
    return found
