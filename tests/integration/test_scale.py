"""Large DAGs on a real worker: broker messages stay bounded, chords join in Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestrator import Workflow
from tests.integration import workload

pytestmark = pytest.mark.integration


def ladder(name: str, diamonds: int) -> Workflow:
    """s0 -> (b0, c0) -> s1 -> (b1, c1) -> s2 ...: 3 * diamonds + 1 steps."""
    wf = Workflow(name)
    wf.step("s0", workload.noop)
    for i in range(diamonds):
        wf.step(f"b{i}", workload.noop, after=f"s{i}")
        wf.step(f"c{i}", workload.noop, after=f"s{i}")
        wf.step(f"s{i + 1}", workload.noop, after=[f"b{i}", f"c{i}"])
    return wf


def fan(name: str, width: int) -> Workflow:
    """src -> width parallel steps -> sink."""
    wf = Workflow(name)
    wf.step("src", workload.noop)
    for i in range(width):
        wf.step(f"m{i}", workload.noop, after="src")
    wf.step("sink", workload.noop, after=[f"m{i}" for i in range(width)])
    return wf


def _largest(wf: Workflow, published: Callable[[], list[tuple[str, int]]]) -> tuple[int, int]:
    before = len(published())
    run = wf.run()
    run.wait(timeout=180)
    sent = published()[before:]
    assert all(name != "celery.chord_unlock" for name, _ in sent)
    assert all(s.status == "succeeded" for s in run.steps())
    return max(size for _, size in sent), len(sent)


@pytest.mark.parametrize("shape", [ladder, fan], ids=["diamond-ladder", "fan-out-fan-in"])
def test_largest_message_does_not_grow_with_steps(
    shape: Callable[[str, int], Workflow],
    worker: Any,
    published: Callable[[], list[tuple[str, int]]],
) -> None:
    # Given the same shape at about 100 and about 500 steps
    small = shape(f"{shape.__name__}-small", 33 if shape is ladder else 98)
    large = shape(f"{shape.__name__}-large", 167 if shape is ladder else 500)
    # When both run on a real worker
    small_max, small_count = _largest(small, published)
    large_max, large_count = _largest(large, published)
    # Then every step was published once, no chord_unlock task ran,
    # and the largest message of the 500-step run is no larger than that of the 100-step run
    assert small_count == 100 and large_count == 502
    assert large_max <= small_max * 1.1, (small_max, large_max)
    assert large_max < 40_000
