"""Fixtures of the engine's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.engine.harness import Engine
from tests.unit.engine.steps import CALLS


@pytest.fixture
def engine() -> Iterator[Engine]:
    CALLS.clear()
    made = Engine()
    yield made
    made.close()
