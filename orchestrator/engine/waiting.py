"""What each step of an unfinished run waits for: ``StepRun.waiting_for`` (design section 4).

A step that has not ended is asked, in order, to each registered *probe*; the first that
recognizes the step's wait names it (a :class:`Waiting`: one of ``records.WAIT_REASONS`` and a
detail a person reads). A probe reads only state the framework already holds (the run's flag and
history, noted retries, breakers, child runs, the registry of workers, and whatever its own
feature keeps), never a guess from elapsed time. A step that waits for the steps it runs after,
or that runs on a worker, waits for nothing here (``None``).

The built-in probes (``paused``, ``child_run``, ``retry_delay``, ``breaker``, ``queue``) are in
:mod:`orchestrator.engine.wait_reasons`. A feature that makes steps wait adds its own::

    from orchestrator.engine.waiting import ORDER_WAIT_STEPS, Waiting, WaitQuery, add_probe

    def sleeping(q: WaitQuery) -> Waiting | None:
        ...  # None when this step is not asleep
    add_probe("sleep", sleeping, ORDER_WAIT_STEPS)

``order`` places it among the others (see the ``ORDER_*`` constants): paused first, the queue
(the fallback for a ready step) last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property

from orchestrator.core.spec import StepSpec, WorkflowSpec
from orchestrator.engine.services import PlanKey, Services
from orchestrator.errors import ServiceUnavailable
from orchestrator.records import LOST_AFTER, RunRecord, StepRecord, WorkerInfo
from orchestrator.status import StepStatus

log = logging.getLogger("orchestrator")
ORDER_PAUSED = 10
ORDER_CHILD_RUN = 20
ORDER_RETRY_DELAY = 30
ORDER_BREAKER = 40
ORDER_FLOW_CONTROL = 50  # concurrency, rate_limit
ORDER_WAIT_STEPS = 60  # sleep, signal
ORDER_QUEUE = 100
READY = (StepStatus.PENDING, StepStatus.RETRYING)


@dataclass(frozen=True)
class Waiting:
    """Why a step has not ended: ``reason`` (one of ``records.WAIT_REASONS``) and a detail a
    person reads; ``stuck`` when nothing will end the wait as things are (no live worker would
    take the step)."""

    step_id: str
    reason: str
    detail: str
    stuck: bool = False


@dataclass
class WaitQuery:
    """One step to explain, with what the probes share (read once per run, when asked)."""

    rt: Services
    record: RunRecord
    spec: WorkflowSpec
    step: StepRecord
    planned: StepSpec
    ready: bool
    """Pending or retrying, and every step it runs after has ended."""
    shared: RunFacts = field(repr=False)

    def workers(self) -> list[WorkerInfo] | None:
        """The live workers; None when the registry cannot be read."""
        return self.shared.workers

    def child_runs(self) -> dict[str, RunRecord]:
        """The run's child runs by the step that started them."""
        return self.shared.children


class RunFacts:
    """What several steps' probes ask of one run, read at most once."""

    def __init__(self, rt: Services, record: RunRecord) -> None:
        self.rt = rt
        self.record = record

    @cached_property
    def workers(self) -> list[WorkerInfo] | None:
        try:
            return [w for w in self.rt.workers.workers(lost_after=LOST_AFTER) if not w.lost]
        except (ServiceUnavailable, OSError):
            return None

    @cached_property
    def children(self) -> dict[str, RunRecord]:
        found = self.rt.history.children(self.record.id)
        return {c.parent_step_id: c for c in found if c.parent_step_id}


Probe = Callable[[WaitQuery], Waiting | None]
_probes: dict[str, tuple[int, Probe]] = {}


def add_probe(name: str, probe: Probe, order: int) -> None:
    """Register (or replace) the probe called ``name``; probes run by ``order``, lowest first."""
    _probes[name] = (order, probe)


def remove_probe(name: str) -> None:
    """Forget the probe called ``name`` (a test's own)."""
    _probes.pop(name, None)


def probes() -> list[tuple[str, Probe]]:
    """The registered probes in the order they are asked."""
    from orchestrator.engine import wait_reasons  # noqa: F401  (the built-in probes register)

    return [(n, p) for n, (_, p) in sorted(_probes.items(), key=lambda item: item[1][0])]


def run_waits(rt: Services, record: RunRecord, steps: list[StepRecord]) -> dict[str, Waiting]:
    """What each step of ``record`` that has not ended waits for, by step id (steps that wait
    for nothing here are left out; a run that ended waits for nothing)."""
    if record.status.terminal:
        return {}
    try:
        spec = rt.plan(PlanKey(record.workflow_version))[0]
    except (LookupError, ValueError):  # its spec is gone from history, or no longer validates
        return {}
    planned = {s.id: s for s in spec.steps}
    status = {s.step_id: s.status for s in steps}
    facts = RunFacts(rt, record)
    found: dict[str, Waiting] = {}
    for step in steps:
        spec_step = planned.get(step.step_id.partition("[")[0])
        if spec_step is None or step.status.terminal:
            continue
        parents_ended = all(status.get(p, StepStatus.PENDING).terminal for p in spec_step.after)
        is_item = step.step_id != spec_step.id
        ready = step.status in READY and (parents_ended or is_item)
        query = WaitQuery(rt, record, spec, step, spec_step, ready, facts)
        waiting = explain(query)
        if waiting is not None:
            found[step.step_id] = waiting
    return found


def explain(query: WaitQuery) -> Waiting | None:
    """The first probe's answer for one step; None when none recognizes its wait."""
    for _, probe in probes():
        found = probe(query)
        if found is not None:
            return found
    return None


def with_waits(rt: Services, record: RunRecord, steps: list[StepRecord]) -> list[StepRecord]:
    """``steps`` with ``waiting_for`` and ``waiting_detail`` filled in; unchanged when Redis or
    PostgreSQL cannot be asked (the steps are readable all the same)."""
    try:
        waits = run_waits(rt, record, steps)
    except Exception as exc:  # advisory: Redis away (its client's errors are not ours to name)
        log.warning("what the steps of run %s wait for is unknown: %s", record.id, exc)
        return steps
    return [
        replace(s, waiting_for=w.reason, waiting_detail=w.detail)
        if (w := waits.get(s.step_id))
        else s
        for s in steps
    ]
