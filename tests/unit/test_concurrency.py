"""Workflow concurrency: the option's checks, a run's key, and the slot store's rules (on the
in-memory twin; ``tests/integration/test_concurrency.py`` runs the same rules on Redis)."""

from __future__ import annotations

import time

import pytest
import yaml

from orchestrator.core.concurrency import (
    ConcurrencySpec,
    describe_wait,
    key_of,
    slot_name,
    slot_parts,
)
from orchestrator.core.spec import parse_spec
from orchestrator.errors import ConcurrencyError, ConcurrencyKeyError, ValidationError
from orchestrator.ports import SlotStore
from orchestrator.stores.memory.slots import MemorySlots
from orchestrator.workflow import Workflow


def spec_with(concurrency: object) -> dict[str, object]:
    return {"name": "sync", "concurrency": concurrency, "steps": [{"id": "a", "task": "t.a"}]}


def test_yaml_and_python_build_the_same_limit() -> None:
    doc = """
    name: sync
    concurrency: {max_runs: 2, key: inputs.tenant, on_limit: queue}
    steps: [{id: a, task: t.a}]
    """
    from_yaml = parse_spec(yaml.safe_load(doc))
    cc = {"max_runs": 2, "key": "inputs.tenant", "on_limit": "queue"}
    from_python = Workflow("sync_py", concurrency=cc).step("a", "t.a").spec
    assert from_yaml.concurrency == from_python.concurrency == ConcurrencySpec(**cc)


@pytest.mark.parametrize(
    ("concurrency", "problem"),
    [
        ({"max_runs": 0}, "max_runs=0 must be at least 1"),
        ({"max_runs": 2, "on_limit": "drop"}, "on_limit='drop' must be one of queue"),
        ({"max_runs": 2, "key": "inputs.tenant +"}, "does not parse as CEL"),
        ({"max_runs": 2, "key": "tenant"}, "names 'tenant', which it cannot read"),
        ({"max_runs": 2, "key": " "}, "is empty"),
    ],
)
def test_a_bad_limit_is_a_concurrency_error_naming_the_workflow(
    concurrency: dict[str, object], problem: str
) -> None:
    with pytest.raises(ConcurrencyError, match=f"workflow 'sync': concurrency .*{problem}"):
        parse_spec(spec_with(concurrency))
    with pytest.raises(ConcurrencyError, match="workflow 'sync_bad'"):
        _ = Workflow("sync_bad", concurrency=concurrency).step("a", "t.a").spec


def test_an_unknown_option_names_the_closest_one() -> None:
    with pytest.raises(ValidationError, match="max_run"):
        parse_spec(spec_with({"max_run": 2}))


def test_a_key_is_text_from_the_inputs() -> None:
    cc = ConcurrencySpec(max_runs=1, key="inputs.tenant")
    assert key_of("sync", cc, {"tenant": "acme"}) == "acme"
    assert key_of("sync", cc, {"tenant": 7}) == "7"
    assert key_of("sync", ConcurrencySpec(max_runs=1), {}) is None
    with pytest.raises(ConcurrencyKeyError, match="workflow 'sync'.*inputs.tenant"):
        key_of("sync", cc, {"other": 1})
    with pytest.raises(ConcurrencyKeyError, match="string or a number"):
        key_of("sync", cc, {"tenant": ["a"]})


def test_slot_names_are_unambiguous_and_read_back() -> None:
    assert slot_name("a:b", "c") != slot_name("a", "b:c")
    assert slot_parts(slot_name("sync", None)) == ("sync", None)
    assert describe_wait(slot_name("sync", "acme"), 2, 2, 3) == (
        "2 of 2 runs of 'sync' for key 'acme' running; 3rd in line"
    )
    assert describe_wait(slot_name("sync", None), 1, 1, 11) == (
        "1 of 1 runs of 'sync' running; 11th in line"
    )


def check_slot_rules(slots: SlotStore, slot: str) -> None:
    """The rules every slot store keeps (run by the Redis adapter's test too)."""
    # Given a limit of 2: two start, the third and fourth wait in line, in order
    assert [slots.acquire(slot, r, 2, "queue").outcome for r in "abcd"] == [
        "started",
        "started",
        "queued",
        "queued",
    ]
    assert slots.acquire(slot, "d", 2, "queue").position == 2  # asking again changes nothing
    assert slots.where(slot, "d") == ("waiting", 2, 2, 2)
    # When a waiting run leaves the line, and a holder ends, the next in line gets its slot
    assert slots.release(slot, "c") == []
    assert slots.release(slot, "a") == ["d"]
    assert slots.line(slot) == (["b", "d"], [])
    # cancel_newest refuses, cancel_oldest evicts the oldest holder
    assert slots.acquire(slot, "e", 2, "cancel_newest").outcome == "rejected"
    taken = slots.acquire(slot, "f", 2, "cancel_oldest")
    assert (taken.outcome, taken.evicted) == ("started", ("b",))
    assert slots.line(slot) == (["d", "f"], [])
    assert sorted(slots.held_since(slot, time.time() + 60)) == ["d", "f"]
    assert slots.held_since(slot, time.time() - 60) == []
    # hold records a running run whatever the limit (repair); releases empty the slot
    slots.hold(slot, "g", 2)
    assert slots.line(slot)[0] == ["d", "f", "g"]
    for run in ("d", "f", "g"):
        slots.release(slot, run)
    assert slot not in slots.slots()


def test_the_memory_twin_keeps_the_slot_rules() -> None:
    check_slot_rules(MemorySlots(), slot_name("sync", "acme"))


def test_a_raised_limit_lets_waiting_runs_in_at_the_next_ask() -> None:
    slots, slot = MemorySlots(), slot_name("sync", None)
    for run in "abc":
        slots.acquire(slot, run, 1, "queue")
    admission = slots.acquire(slot, "d", 3, "queue")
    assert admission.promoted == ("b", "c")
    assert admission.outcome == "queued"
