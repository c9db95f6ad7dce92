"""Chaos: many runs of random DAGs, random failures, while processes and servers are killed.

Issue 9's randomized test. A seeded plan (printed; ``CHAOS_SEED=<n>`` replays it) makes:

* **runs** of three shapes, submitted at random times during the chaos phase: three in five
  are random DAGs, 1 to 8 steps, edges drawn at random between earlier and later steps (any
  DAG, many not series-parallel: about a third get an explicit N ``a→c, b→c, b→d``, which the
  planner turns into a join); one in five a **fan-out** (``list`` of 2-20 items → ``work``, a
  ``for_each`` chaos step whose every item follows the step's plan → an optional chaos step);
  one in five a **child workflow**'s run (a ``child`` step running one of
  ``shapes.CHAOS_CHILDREN``, chaos steps themselves, one of which fails for good about a fifth
  of the time, beside a chaos step and before another);
* per step a **failure plan**: the step's attempts 1..k fail (``fails`` in its kwargs: "raise"
  a ``ConnectionError``, or "hang" until its hard ``timeout`` kills it), later attempts
  succeed; a **retry policy** from the task's own ``@retry`` (``chaos_r2/r4/r5/r7``: 2, 4, 5, 7
  attempts, delays of 0.05-1 s) or a per-step ``retry={...}`` naming every field (1-6 attempts),
  or none (1 attempt); a hard **timeout** (1.5-3 s) on about a quarter of the steps; a result
  that is a ``datetime``/``Decimal``/``UUID`` (Celery's JSON takes them) on about a tenth;
* **control**: about 12 % of the runs paused (then resumed 0.5-5 s later), about 8 % cancelled;
* **faults** at random times: SIGKILL of a pool child (one inside a step body when there is
  one), SIGKILL of a whole worker (main process and children; a replacement is started at once,
  as a supervisor would), Redis ``kill -9`` then started again on its AOF after a random
  outage (sometimes longer than the lease), PostgreSQL ``pg_ctl restart -m immediate``.

After the phase, every run still paused by the test is resumed, the test waits up to
``drain`` seconds (**the bound**: every run must be terminal within ``drain`` seconds of the end
of the chaos phase, which is also when the last submission, control action and fault happened),
lets the history settle (at most 15 s: a terminal run's last step rows may land just after it),
and checks over PostgreSQL and the effect tables:

1. ended: every run terminal within the bound (else *stuck*); every submitted run has a row and
   a succeeded run has the effect of each of its steps and of each item of a ``for_each`` step
   (else *lost*); child runs are runs like the others (their own plan, their own checks);
2. status consistency: succeeded run ⇒ every step succeeded; failed run ⇒ a step failed (or the
   run's deadline) and no step pending/running/retrying; cancelled run ⇒ no step
   pending/running/retrying (and only runs the test cancelled are cancelled);
3. no step executed concurrently twice: two ``executions`` of one (run, step) overlap when the
   later started before the earlier was last seen alive (``ended_at`` when its body ended,
   else its last 0.2 s heartbeat ``seen_at``: a killed execution); only provable overlaps count;
4. effects: one per idempotency key (primary key) and at most one per (run, step)
   (*duplicated*);
5. attempts as configured: with k planned failures and m = max_attempts, a succeeded step has
   k < m and ``attempts == k + 1``; a failed step has k >= m, ``attempts == m`` and an
   ``exhausted`` dead letter (a ``too_many_deliveries`` dead letter is a kill-induced failure,
   counted but not a mismatch); a skipped/cancelled step (cut short by its run's failure or
   cancellation, or by a pause) used no more than min(k + 1, m) attempts; no step executed an
   attempt beyond min(k + 1, m) (kills may add deliveries, never attempts). The run's outcome
   follows: failed iff some step has k >= m (or a kill-induced dead letter), cancelled only if
   the test cancelled it (or it is a child run whose parent was cancelled or failed), otherwise
   succeeded (*wrong outcome*). An item of a ``for_each`` step is checked as a step with the
   step's plan; a child workflow's step ended as its child run did (else *inconsistent*), and a
   child run that failed fails its parent.

It prints a table (runs, faults by kind, outcomes, lost, stuck, duplicated, overlapping
executions, attempt mismatches, ...), then each violation with its run and step, and appends a
line to ``artifacts/faults.json`` like the other tests; the cluster (logs) is kept on failure.

Forms:

* short (default; in ``make test`` with ``FAULTS=1``): about 2 minutes wall: 40 runs over a
  35 s phase, 3 pool-child kills, 1 worker kill, 1 Redis and 1 PostgreSQL restart, 75 s bound.
  It uses the suite's **tuned** settings (lease 3 s, reconcile 1 s, stall 10 s, visibility
  20 s): with the defaults (lease 30 s, reconcile 5 s, stall 300 s, visibility 3600 s) a
  recovery alone takes 30 s to 5 minutes, which no 2-minute test can wait for.
* long (``CHAOS_LONG=1``, or the suite's ``FAULTS_LONG=1``): about 15 minutes: 360 runs over
  an 8-minute phase, 36 faults, with the **default** settings, so the bound is 7 minutes
  (longer than the 300 s stall timeout).

``CHAOS_SETTINGS=tuned|defaults`` overrides the form's choice; ``CHAOS_RUNS``, ``CHAOS_PHASE``
and ``CHAOS_DRAIN`` (seconds) override the sizes.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import random
import signal
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator import Workflow, get_run
from orchestrator.core.planner import build_plan
from orchestrator.settings import Settings
from orchestrator.testing.workers import Worker
from tests.faults import effects, harness, shapes
from tests.faults.harness import DEFAULT_ENV, TERMINAL, TUNED, FaultCluster, kill
from tests.faults.outcome import Outcome

LONG = os.environ.get("CHAOS_LONG") == "1" or harness.LONG
pytestmark = [pytest.mark.faults, pytest.mark.timeout(2400 if LONG else 420)]

ACTIVE = ("pending", "running", "retrying")
TUNED_ENV = {k: v for k, v in DEFAULT_ENV.items() if k in TUNED}  # lease 3 s, stall 10 s, ...


def default_settings() -> dict[str, str]:
    """The product's defaults for the timings the suite tunes (read from ``Settings``)."""
    fields = Settings.model_fields
    names = ("lease_seconds", "reconcile_interval", "stall_timeout", "visibility_timeout")
    return {f"ORCHESTRATOR_{n.upper()}": str(fields[n].default) for n in names}


@dataclass
class Profile:
    name: str
    runs: int
    phase: float  # seconds during which runs are submitted, controlled and faults injected
    drain: float  # the bound: every run terminal this long after the phase
    faults: dict[str, int]
    settings: str  # "tuned" or "defaults"
    outage: tuple[float, float]  # Redis down for a uniform draw in this range (seconds)
    workers: int = 2
    concurrency: int = 2

    def env(self) -> dict[str, str]:
        """The timings the workers run with (``cluster(defaults=True)`` leaves them unset)."""
        return default_settings() if self.settings == "defaults" else dict(TUNED_ENV)


def profile() -> Profile:
    if LONG:
        prof = Profile(
            "long",
            runs=360,
            phase=480.0,
            drain=420.0,
            faults={"pool_child": 18, "worker": 6, "redis": 6, "postgres": 6},
            settings="defaults",
            outage=(1.0, 45.0),
        )
    else:
        prof = Profile(
            "short",
            runs=40,
            phase=35.0,
            drain=75.0,
            faults={"pool_child": 3, "worker": 1, "redis": 1, "postgres": 1},
            settings="tuned",
            outage=(0.5, 5.0),
        )
    prof.settings = os.environ.get("CHAOS_SETTINGS", prof.settings)
    prof.runs = int(os.environ.get("CHAOS_RUNS", prof.runs))
    prof.phase = float(os.environ.get("CHAOS_PHASE", prof.phase))
    prof.drain = float(os.environ.get("CHAOS_DRAIN", prof.drain))
    return prof


# -- the seeded plan -----------------------------------------------------------------------------


def own_attempts(task: str) -> int:
    """max_attempts of a chaos task's own ``@retry`` (1 without one, and for a child step)."""
    found = effects.CHAOS_TASKS.get(task.rsplit(".", 1)[-1])
    return (found[1] if found else None) or 1


def max_attempts(step: dict[str, Any]) -> int:
    """What the step's policy allows: its ``retry`` (every field given) or its task's own."""
    retry = step.get("retry")
    if retry:
        return int(retry["max_attempts"])
    return own_attempts(step["task"])


def random_step(rng: random.Random, sid: str, after: list[str], tuned: bool) -> dict[str, Any]:
    name = rng.choice([*effects.CHAOS_TASKS, "override", "override"])
    retry: dict[str, Any] | None = None
    if name == "override":
        name = rng.choice(list(effects.CHAOS_TASKS))
        retry = {
            "max_attempts": rng.randint(1, 6),
            "base_delay": rng.choice([0.0, 0.05, 0.2, 0.5]),
            "backoff": rng.choice([1.0, 2.0]),
            "max_delay": 1.0,
            "jitter": rng.random() < 0.5,
            "on": [],
        }
    task = getattr(effects, name)
    timeout = rng.choice([1.5, 2.0, 3.0]) if rng.random() < 0.25 else None
    m = retry["max_attempts"] if retry else own_attempts(name)
    if tuned and rng.random() < 0.03:
        # a delay past half the visibility timeout (10 s tuned): kept in Redis's delay set
        retry = {"max_attempts": 2, "base_delay": 11.0, "backoff": 1.0, "max_delay": 11.0}
        retry |= {"jitter": False, "on": []}
        m, k = 2, 1
    else:
        draw = rng.random()
        if draw < 0.6 or (m == 1 and draw < 0.93):
            k = 0
        elif draw < 0.93:
            k = rng.randint(1, m - 1)
        else:
            k = m  # fails for good
    fails = ["hang" if timeout and rng.random() < 0.35 else "raise" for _ in range(k)]
    sleep = round(rng.uniform(0.05, 0.6), 2)
    kind = rng.choice(["datetime", "decimal", "uuid"]) if rng.random() < 0.1 else "str"
    return {
        "id": sid,
        "task": task,
        "after": after,
        "kwargs": {"fails": fails, "sleep": sleep, "result": kind},
        "retry": retry,
        "timeout": timeout,
    }


def random_workflow(rng: random.Random, name: str, tuned: bool) -> Workflow:
    """A random workflow of one of three shapes: a static DAG (three in five), a ``for_each``
    fan-out, or a run with a child workflow's step (one in five each)."""
    draw = rng.random()
    if draw < 0.2:
        return fan_out_workflow(rng, name, tuned)
    if draw < 0.4:
        return child_workflow(rng, name, tuned)
    return static_workflow(rng, name, tuned)


def add_step(wf: Workflow, step: dict[str, Any], **extra: Any) -> None:
    wf.step(
        step["id"],
        step["task"],
        after=step["after"] or None,
        kwargs=step["kwargs"],
        retry=step["retry"],
        timeout=step["timeout"],
        **extra,
    )


def static_workflow(rng: random.Random, name: str, tuned: bool) -> Workflow:
    n = rng.randint(1, 8)
    density = rng.uniform(0.15, 0.6)
    edges = {(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < density}
    if n >= 4 and rng.random() < 0.35:
        a, b, c, d = sorted(rng.sample(range(n), 4))
        edges |= {(a, c), (b, c), (b, d)}  # the N
        edges -= {(a, d), (c, d)}
    wf = Workflow(name)
    for j in range(n):
        after = [f"s{i}" for i in range(j) if (i, j) in edges]
        add_step(wf, random_step(rng, f"s{j}", after, tuned))
    return wf


def fan_out_workflow(rng: random.Random, name: str, tuned: bool) -> Workflow:
    """``list`` (2-20 items) -> ``work`` (``for_each``: each item follows the step's failure
    plan, retry policy and timeout) -> an optional chaos step after it."""
    wf = Workflow(name).step("list", shapes.items, kwargs={"count": rng.randint(2, 20)})
    add_step(wf, random_step(rng, "work", ["list"], tuned), for_each="list")
    if rng.random() < 0.6:
        add_step(wf, random_step(rng, "s0", ["work"], tuned))
    return wf


def child_workflow(rng: random.Random, name: str, tuned: bool) -> Workflow:
    """A root ``child`` step running one of ``shapes.CHAOS_CHILDREN`` (one that fails about a
    fifth of the time), a chaos step beside it, and one after both."""
    fails = rng.random() < 0.2
    child = (
        "faults_chaos_child_fails"
        if fails
        else rng.choice(["faults_chaos_child_ok", "faults_chaos_child_slow"])
    )
    wf = Workflow(name).step("child", workflow=child)
    add_step(wf, random_step(rng, "s0", [], tuned))
    add_step(wf, random_step(rng, "s1", ["child", "s0"], tuned))
    return wf


@dataclass(order=True)
class Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    arg: Any = field(compare=False, default=None)


def schedule(rng: random.Random, prof: Profile) -> list[Event]:
    events: list[Event] = []
    seq = iter(range(10**9))
    for i in range(prof.runs):
        at = rng.uniform(0.0, prof.phase * 0.85)
        events.append(Event(at, next(seq), "submit", i))
        if rng.random() < 0.12:
            pause = at + rng.uniform(0.2, 4.0)
            events.append(Event(pause, next(seq), "pause", i))
            events.append(Event(pause + rng.uniform(0.5, 5.0), next(seq), "resume", i))
        if rng.random() < 0.08:
            events.append(Event(at + rng.uniform(0.0, 6.0), next(seq), "cancel", i))
    kinds = [k for k, n in prof.faults.items() for _ in range(n)]
    rng.shuffle(kinds)
    start, end = 4.0, max(5.0, prof.phase - 4.0)
    slot = (end - start) / max(1, len(kinds))
    for index, kind in enumerate(kinds):  # one fault per slot: spread over the phase
        at = start + slot * index + rng.uniform(0.1, 0.9) * slot
        events.append(Event(at, next(seq), kind, rng.random()))
    heapq.heapify(events)
    return events


# -- the driver ----------------------------------------------------------------------------------


class Chaos:
    def __init__(self, c: FaultCluster, prof: Profile, seed: int) -> None:
        self.c = c
        self.prof = prof
        self.seed = seed
        self.rng = random.Random(seed)
        self.workflows: list[Workflow] = []
        self.runs: dict[int, str] = {}
        self.cancel_asked: set[str] = set()
        self.paused: set[str] = set()
        self.faults: list[dict[str, Any]] = []
        self.driver_errors: list[str] = []
        self.non_sp = 0
        self.pauses = 0
        self.t0 = time.time()

    def live_workers(self) -> list[Worker]:
        return [w for w in self.c.workers if w.running and not w.stopped]

    def attempt(self, what: str, call: Callable[[], Any], tries: int = 3) -> Any:
        """A control call of the test; servers may be restarting: try again, then note it."""
        for n in range(tries):
            try:
                return call()
            except Exception as exc:  # noqa: BLE001 - the test's own calls, reported
                if n == tries - 1:
                    self.driver_errors.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
                    return None
                time.sleep(0.5)
        return None

    def submit(self, i: int) -> None:
        wf = self.workflows[i]
        try:
            handle = wf.run()
        except Exception as exc:  # noqa: BLE001 - a submit refused during an outage is allowed
            self.driver_errors.append(f"submit {i}: {type(exc).__name__}: {exc}"[:300])
            return
        self.runs[i] = handle.id

    def control(self, kind: str, i: int) -> None:
        run = self.runs.get(i)
        if run is None:
            return
        handle = self.attempt(f"handle {run}", lambda: get_run(run))
        if handle is None:
            return
        status = self.attempt(f"status {run}", lambda: handle.record().status)
        if status is None or status in TERMINAL:
            return
        if kind == "pause" and status in ("pending", "running"):
            if self.attempt(f"pause {run}", handle.pause):
                self.paused.add(run)
                self.pauses += 1
        elif kind == "resume" and run in self.paused and status == "paused":
            if self.attempt(f"resume {run}", handle.resume):
                self.paused.discard(run)
        elif kind == "cancel":
            self.cancel_asked.add(run)
            self.attempt(f"cancel {run}", handle.cancel)

    def busy_children(self) -> dict[int, Worker]:
        pool = {pid: w for w in self.live_workers() for pid in w.pool()}
        rows = self.c.sql(
            "SELECT pid FROM executions WHERE ended_at IS NULL "
            "AND seen_at > clock_timestamp() - interval '1 second'"
        )
        return {int(r[0]): pool[int(r[0])] for r in rows if int(r[0]) in pool}

    def fault(self, kind: str, draw: float) -> None:
        at = time.time()
        detail: dict[str, Any] = {"kind": kind, "at": at, "t": round(at - self.t0, 1)}
        if kind == "pool_child":
            deadline = time.monotonic() + 3.0
            busy = self.busy_children()
            while not busy and time.monotonic() < deadline:
                time.sleep(0.1)
                busy = self.busy_children()
            if busy:
                pid = sorted(busy)[int(draw * len(busy))]
                detail |= {"pid": pid, "worker": busy[pid].name, "busy": True}
            else:
                idle = [(pid, w) for w in self.live_workers() for pid in w.pool()]
                if not idle:
                    return
                pid, owner = idle[int(draw * len(idle))]
                detail |= {"pid": pid, "worker": owner.name, "busy": False}
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            detail["pids"] = [pid]
        elif kind == "worker":
            live = self.live_workers()
            if not live:
                return
            worker = live[int(draw * len(live))]
            detail |= {"worker": worker.name, "pids": [worker.pid, *worker.pool()]}
            worker.kill()
            new = self.c.replace(worker, wait=False)
            detail["replacement"] = new.name
        elif kind == "redis":
            down = self.prof.outage[0] + draw * (self.prof.outage[1] - self.prof.outage[0])
            kill(self.c.redis)
            time.sleep(down)
            self.c.redis.start()
            detail["down_s"] = round(down, 1)
        elif kind == "postgres":
            self.c.postgres.restart("immediate")
            detail["took_s"] = round(time.time() - at, 1)
        shown = {k: v for k, v in detail.items() if k not in ("at", "t")}
        print(f"  fault at {detail['t']:6.1f}s: {shown}", flush=True)
        self.faults.append(detail)

    def run_phase(self) -> None:
        tuned = self.prof.settings == "tuned"
        plan_rng = random.Random(self.rng.random())
        for i in range(self.prof.runs):
            wf = random_workflow(plan_rng, f"chaos-{self.seed}-{i}", tuned)
            spec = wf.spec
            if any(seg.trigger for seg in build_plan(spec).segments):
                self.non_sp += 1
            self.workflows.append(wf)
        events = schedule(random.Random(self.rng.random()), self.prof)
        self.t0 = time.time()
        mono0 = time.monotonic()
        while events:
            wait = events[0].at - (time.monotonic() - mono0)
            if wait > 0:
                time.sleep(min(wait, 0.5))
                continue
            event = heapq.heappop(events)
            try:
                if event.kind == "submit":
                    self.submit(event.arg)
                elif event.kind in ("pause", "resume", "cancel"):
                    self.control(event.kind, event.arg)
                else:
                    self.fault(event.kind, event.arg)
            except Exception:  # noqa: BLE001 - the driver goes on; reported
                self.driver_errors.append(traceback.format_exc(limit=3)[-400:])
        left = self.prof.phase - (time.monotonic() - mono0)
        if left > 0:
            time.sleep(left)
        # the test's own pauses end with the phase
        for row in self.c.sql("SELECT id::text FROM workflow_runs WHERE status = 'paused'"):
            run = str(row[0])
            self.attempt(f"final resume {run}", lambda run=run: get_run(run).resume())


# -- the checks ----------------------------------------------------------------------------------


@dataclass
class Findings:
    counts: Counter[str] = field(default_factory=Counter)
    details: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    runs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, invariant: str, run: str, step: str | None, detail: str) -> None:
        self.counts[invariant] += 1
        self.runs[invariant].add(run)
        where = f"run {run}" + (f" step {step}" if step else "")
        self.details[invariant].append(f"{where}: {detail}")


def settle(c: FaultCluster, run_ids: list[str], seconds: float = 15.0) -> None:
    """Give a terminal run's last step rows (written after its run row) a moment to land."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = c.sql(
            "SELECT count(*) FROM task_runs t JOIN workflow_runs r ON r.id = t.run_id "
            "WHERE r.id = ANY(%s::uuid[]) AND r.status IN ('succeeded', 'failed', 'cancelled') "
            "AND t.status IN ('pending', 'running', 'retrying')",
            (run_ids,),
        )
        if not rows[0][0]:
            return
        time.sleep(0.5)


@dataclass
class History:
    """What PostgreSQL holds about the runs, keyed for the checks."""

    runs: dict[str, dict[str, Any]]
    steps: dict[str, dict[str, tuple[str, int, str | None]]]
    letters: dict[tuple[str, str], list[str]]
    effects: dict[tuple[str, str], list[int]]
    execs: dict[tuple[str, str], list[tuple[Any, ...]]]
    recovered: Counter[str]
    timed_out: dict[tuple[str, str], set[int]]

    @classmethod
    def load(cls, c: FaultCluster, run_ids: list[str]) -> History:
        ids = (run_ids,)
        runs = {
            r[0]: {
                "status": r[1],
                "error": r[2],
                "error_step": r[3],
                "spec": r[4],
                "age": r[5],
                "parent": r[6],
                "parent_step": r[7],
            }
            for r in c.sql(
                "SELECT r.id::text, r.status, r.error, r.error_step, s.spec, "
                "extract(epoch FROM r.finished_at - r.created_at), r.parent_run_id::text, "
                "r.parent_step_id "
                "FROM workflow_runs r JOIN workflow_specs s ON s.version = r.workflow_version "
                "WHERE r.id = ANY(%s::uuid[])",
                ids,
            )
        }
        steps: dict[str, dict[str, tuple[str, int, str | None]]] = defaultdict(dict)
        for run, sid, status, attempts, error in c.sql(
            "SELECT run_id::text, step_id, status, attempts, error FROM task_runs "
            "WHERE run_id = ANY(%s::uuid[])",
            ids,
        ):
            steps[run][sid] = (status, int(attempts or 0), error)
        letters: dict[tuple[str, str], list[str]] = defaultdict(list)
        for run, sid, reason in c.sql(
            "SELECT run_id::text, step_id, reason FROM dead_letters WHERE run_id = ANY(%s::uuid[])",
            ids,
        ):
            letters[(run, sid)].append(reason)
        effects_by: dict[tuple[str, str], list[int]] = defaultdict(list)
        for run, sid, attempt in c.sql(
            "SELECT run_id::text, step_id, attempt FROM effects WHERE run_id = ANY(%s::uuid[])",
            ids,
        ):
            effects_by[(run, sid)].append(int(attempt))
        # (attempt, pid, started, last seen, ended or None when killed, inserted)
        execs: dict[tuple[str, str], list[tuple[Any, ...]]] = defaultdict(list)
        for row in c.sql(
            "SELECT run_id::text, step_id, attempt, pid, extract(epoch FROM at)::float8, "
            "extract(epoch FROM seen_at)::float8, extract(epoch FROM ended_at)::float8, "
            "inserted FROM executions WHERE run_id = ANY(%s::uuid[]) ORDER BY at",
            ids,
        ):
            execs[(row[0], row[1])].append(row[2:])
        recovered = Counter(
            r[0]
            for r in c.sql(
                "SELECT split_part(detail, ': ', 2) FROM run_events "
                "WHERE kind = 'recovered' AND run_id = ANY(%s::uuid[])",
                ids,
            )
        )
        # attempts the hard time limit killed (planned hangs, and planned successes that a loaded
        # machine slowed past the limit: an attempt that failed after its effect, not a defect)
        timed_out: dict[tuple[str, str], set[int]] = defaultdict(set)
        for run, sid, attempt in c.sql(
            "SELECT t.run_id::text, t.step_id, a.attempt FROM task_attempts a "
            "JOIN task_runs t ON t.id = a.task_run_id "
            "WHERE t.run_id = ANY(%s::uuid[]) AND a.error LIKE '%%hard time limit%%'",
            ids,
        ):
            timed_out[(run, sid)].add(int(attempt))
        return cls(runs, steps, letters, effects_by, execs, recovered, timed_out)

    def overran(self, run: str, spec: dict[str, Any], rid: str | None = None) -> set[int]:
        """Attempts planned to succeed that the hard time limit killed (a slow machine)."""
        k = len(spec["kwargs"].get("fails", []))
        return {a for a in self.timed_out.get((run, rid or spec["id"]), set()) if a > k}

    def child_of(self, run: str, sid: str) -> str | None:
        """The child run a step of ``run`` started (None if it started none)."""
        return next(
            (r for r, i in self.runs.items() if i["parent"] == run and i["parent_step"] == sid),
            None,
        )

    def units(self, run: str) -> list[tuple[str, dict[str, Any]]]:
        """What a run's plan says is called: (step row id, its spec), a ``for_each`` step's
        items in its place (each one follows the step's plan); a child workflow's step is left
        to :func:`check_child_steps`."""
        steps = self.runs[run]["spec"]["steps"]
        count = {s["id"]: int(s.get("kwargs", {}).get("count", 0)) for s in steps}
        found: list[tuple[str, dict[str, Any]]] = []
        for spec in steps:
            if spec.get("workflow"):
                continue
            if spec.get("for_each"):
                found += [(f"{spec['id']}[{i}]", spec) for i in range(count[spec["for_each"]])]
            else:
                found.append((spec["id"], spec))
        return found


def is_item(rid: str) -> bool:
    return rid.endswith("]")


def check_ended(f: Findings, h: History, submitted: list[str]) -> None:
    """1. Every run terminal at the bound (not stuck) and nothing lost."""
    for run in submitted:
        if run not in h.runs:
            f.add("lost", run, None, "submitted (a handle was returned) but has no row")
    for run, info in h.runs.items():
        if info["status"] not in TERMINAL:
            unfinished = {s: v[0] for s, v in h.steps[run].items() if v[0] not in TERMINAL}
            f.add("stuck", run, None, f"{info['status']} at the bound; steps {unfinished}")
        if info["status"] == "succeeded":
            for rid, _spec in h.units(run):
                if not h.effects.get((run, rid)):
                    f.add("lost", run, rid, "run succeeded without this step's effect")


def check_consistent(f: Findings, run: str, info: dict[str, Any], rows: dict[str, Any]) -> None:
    """2. A terminal run's status agrees with its steps' (a ``for_each`` step's items too)."""
    status = info["status"]
    active = {s: v[0] for s, v in rows.items() if v[0] in ACTIVE}
    if status == "succeeded":
        bad = {s: v[0] for s, v in rows.items() if v[0] != "succeeded"}
        named = {s for s in rows if not is_item(s)}
        if bad or named != {s["id"] for s in info["spec"]["steps"]}:
            f.add("inconsistent", run, None, f"succeeded run with steps {bad}")
    elif status == "failed":
        failed = [s for s, v in rows.items() if v[0] == "failed"]
        deadline = "deadline" in (info["error"] or "")
        if active or not (failed or deadline):
            f.add(
                "inconsistent",
                run,
                info["error_step"],
                f"failed run ({(info['error'] or '')[:120]!r}) with active steps {active}, "
                f"failed steps {failed}",
            )
    elif status == "cancelled" and active:
        f.add("inconsistent", run, None, f"cancelled run with active steps {active}")


def cut_short(info: dict[str, Any], sid: str) -> bool:
    """Whether the run ended (failed at another step, or cancelled) while ``sid`` ran."""
    return info["status"] == "cancelled" or (
        info["status"] == "failed" and info["error_step"] not in (None, sid)
    )


def check_attempts(f: Findings, h: History, run: str, cancel_asked: bool) -> int:
    """5. Attempts as the plan and the policy say, and the run's outcome; kill-induced fails."""
    info = h.runs[run]
    must_fail = killed = False
    for rid, spec in h.units(run):
        fails, kill = check_step_attempts(f, h, run, spec, rid)
        must_fail, killed = must_fail or fails, killed + kill
    must_fail = check_child_steps(f, h, run) or must_fail
    if info["status"] in TERMINAL:
        status = info["status"]
        expected = "failed" if must_fail or killed else "succeeded"
        if status != expected and not (cancel_asked and status == "cancelled"):
            f.add(
                "outcome",
                run,
                info["error_step"],
                f"{status}, expected {expected} (cancel asked: {cancel_asked}); "
                f"error {(info['error'] or '')[:200]!r}",
            )
    return int(killed)


def check_child_steps(f: Findings, h: History, run: str) -> bool:
    """A child workflow's step ends as its child run did (the child run is checked against its
    own plan, as a run); True if a child run failed (which fails this run)."""
    info, failed = h.runs[run], False
    for spec in info["spec"]["steps"]:
        if not spec.get("workflow"):
            continue
        sid, child = spec["id"], h.child_of(run, spec["id"])
        st = h.steps[run].get(sid, ("<no row>", 0, None))[0]
        ended = h.runs[child]["status"] if child else None
        failed = failed or ended == "failed"
        if info["status"] not in TERMINAL or cut_short(info, sid) or st == "skipped":
            continue
        if child is None:
            f.add("lost", run, sid, f"child step {st} but no child run")
        elif {"succeeded": "succeeded", "failed": "failed"}.get(ended or "") not in (st, None):
            f.add("inconsistent", run, sid, f"child step {st}, its child run {child} {ended}")
    return failed


def check_step_attempts(
    f: Findings, h: History, run: str, spec: dict[str, Any], rid: str
) -> tuple[bool, int]:
    """One step's (or item's) attempts against its plan: (the plan fails the run, a kill failed
    it)."""
    info, sid = h.runs[run], rid
    planned, m = len(spec["kwargs"].get("fails", [])), max_attempts(spec)
    # unplanned failures: the machine was too slow (an attempt that finished just as its limit
    # struck may still have succeeded, so success is fine from planned + 1 on)
    k = planned + len(h.overran(run, spec, rid))
    st, attempts, error = h.steps[run].get(sid, ("<no row>", 0, None))
    reasons = h.letters.get((run, sid), [])
    executed = [e[0] for e in h.execs.get((run, sid), [])]
    cap = min(k + 1, m)
    where = f"plan k={k} {spec['kwargs'].get('fails')} m={m}"
    if executed and max(executed) > cap:
        f.add("attempts", run, sid, f"{where}: executed attempt {max(executed)} > {cap} ({st})")
    if info["status"] not in TERMINAL:
        return k >= m, 0
    if st == "failed" and "too_many_deliveries" in reasons:
        return k >= m, 1
    # cut short: its run failed at another step or was cancelled while this attempt ran, so the
    # attempt's failure is final (no retry in an ended run), like a skipped step's
    cut = st in ("skipped", "cancelled") or (
        st == "failed" and not reasons and cut_short(info, sid)
    )
    if cut and attempts > cap:
        f.add("attempts", run, sid, f"{where}: {st}, cut short after attempts={attempts}")
    elif st == "succeeded" and not planned < attempts <= min(k + 1, m):
        f.add("attempts", run, sid, f"{where}: succeeded with attempts={attempts}")
    elif not cut and st == "failed" and (k < m or attempts != m or "exhausted" not in reasons):
        f.add(
            "attempts",
            run,
            sid,
            f"{where}: failed with attempts={attempts}, dead letters {reasons}, "
            f"error {(error or '')[:160]!r}",
        )
    return k >= m, 0


def check_executions(f: Findings, h: History, run: str) -> None:
    """3. No step executed concurrently twice; 4. at most one effect per (run, step)."""
    for sid, spec in h.units(run):
        rows = h.execs.get((run, sid), [])
        for i, first in enumerate(rows):
            end = first[4] if first[4] is not None else first[3]
            for later in rows[i + 1 :]:
                if end is not None and later[2] < end - 0.001:
                    f.add(
                        "overlap",
                        run,
                        sid,
                        f"attempt {first[0]} (pid {first[1]}, {first[2]:.2f}..{end:.2f}"
                        f"{'' if first[4] is not None else ' last seen, then killed'}) and "
                        f"attempt {later[0]} (pid {later[1]}, from {later[2]:.2f}): "
                        f"{end - later[2]:.2f}s overlap",
                    )
        written = [a for a in h.effects.get((run, sid), []) if a not in h.overran(run, spec, sid)]
        if len(written) > 1:
            f.add("duplicated", run, sid, f"{len(written)} effects, attempts {sorted(written)}")


def coverage(h: History) -> dict[str, int]:
    """What the runs exercised (so a green table is not a quiet one)."""
    cov: Counter[str] = Counter()
    for run, info in h.runs.items():
        specs = info["spec"]["steps"]
        cov["fan-out runs (for_each)"] += any(s.get("for_each") for s in specs)
        cov["parent runs (a child workflow's step)"] += any(s.get("workflow") for s in specs)
        cov["child runs"] += info["parent"] is not None
        for sid, spec in h.units(run):
            fails = spec["kwargs"].get("fails", [])
            k, m = len(fails), max_attempts(spec)
            attempts = [e[0] for e in h.execs.get((run, sid), [])]
            status = h.steps[run].get(sid, ("?", 0, None))[0]
            cov["steps"] += 1
            cov["for_each items"] += is_item(sid)
            cov["retried (k < m)"] += 0 < k < m
            cov["fail for good (k >= m)"] += k >= m
            cov["ran attempt >= 4"] += any(a >= 4 for a in attempts)
            cov["hard timeouts (hang attempts run)"] += sum(
                1 for a in attempts if a <= k and fails[a - 1] == "hang"
            )
            cov["retry after a hard timeout"] += any(
                a > 1 and a - 1 <= k and fails[a - 2] == "hang" for a in attempts
            )
            result = spec["kwargs"].get("result", "str")
            cov["non-JSON results returned"] += result != "str" and status == "succeeded"
    return dict(cov)


def cancel_allowed(h: History, run: str, asked: set[str]) -> bool:
    """Whether the run may have ended cancelled: the test cancelled it, or it is a child run
    whose parent was cancelled or failed (a run that ends so cancels its children)."""
    parent = h.runs[run]["parent"]
    if run in asked:
        return True
    return parent is not None and (
        parent in asked or h.runs.get(parent, {}).get("status") in ("failed", "cancelled")
    )


def check(c: FaultCluster, chaos: Chaos, run_ids: list[str]) -> tuple[Findings, dict[str, Any]]:
    f = Findings()
    h = History.load(c, run_ids)
    check_ended(f, h, list(chaos.runs.values()))
    kill_induced = 0
    for run, info in h.runs.items():
        if info["status"] in TERMINAL:
            check_consistent(f, run, info, h.steps[run])
        kill_induced += check_attempts(f, h, run, cancel_allowed(h, run, chaos.cancel_asked))
        check_executions(f, h, run)
    ages = sorted(float(i["age"]) for i in h.runs.values() if i["age"] is not None)
    all_execs = [e for rows in h.execs.values() for e in rows]
    once = {(r, s, e[0]) for (r, s), rows in h.execs.items() for e in rows}
    extra = {
        "statuses": dict(Counter(info["status"] for info in h.runs.values())),
        "kill_induced_failures": kill_induced,
        "killed_executions": sum(1 for e in all_execs if e[4] is None),
        "overran_time_limit": sum(
            len(h.overran(run, spec, rid)) for run in h.runs for rid, spec in h.units(run)
        ),
        "executions": len(all_execs),
        "re_executions": len(all_execs) - len(once),
        "coverage": coverage(h),
        "absorbed": sum(1 for e in all_execs if e[5] is False),
        "recoveries": dict(h.recovered),
        "run_seconds_p50": round(ages[len(ages) // 2], 1) if ages else None,
        "run_seconds_max": round(ages[-1], 1) if ages else None,
    }
    return f, extra


INVARIANTS = [
    ("lost", "lost (no row, or succeeded without an effect)"),
    ("stuck", "stuck (not terminal at the bound)"),
    ("duplicated", "duplicated effects per (run, step)"),
    ("overlap", "overlapping executions of one step"),
    ("attempts", "attempt mismatches"),
    ("outcome", "wrong run outcome"),
    ("inconsistent", "run status inconsistent with steps"),
]


def worker_lines(c: FaultCluster, run: str, limit: int = 12) -> list[str]:
    """Worker log lines naming the run (errors and warnings first)."""
    found: list[str] = []
    for worker in c.workers:
        with contextlib.suppress(OSError):
            for line in worker.output().splitlines():
                if run in line:
                    found.append(f"{worker.name}: {line[:300]}")
    found.sort(key=lambda ln: "ERROR" not in ln and "WARNING" not in ln and "CRIT" not in ln)
    return found[:limit]


def drain(
    c: FaultCluster, chaos: Chaos, bound: float
) -> tuple[list[str], dict[str, str], dict[str, float]]:
    """Wait until ``bound`` for every run to end: the runs' ids, statuses and when each was
    seen ending. Child runs started after the phase (a resumed parent's) are waited for too."""
    ids: list[str] = []
    found: dict[str, str] = {}
    seen: dict[str, float] = {}
    while True:
        every = {r[0] for r in c.sql("SELECT id::text FROM workflow_runs")}
        if ids and every <= set(ids):
            return ids, found, seen
        ids = sorted(every | set(chaos.runs.values()))
        found, more = c.wait_terminal(ids, bound)
        seen |= more


def test_chaos(cluster: Callable[..., FaultCluster]) -> None:
    prof = profile()
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**31))
    print(
        f"\nchaos ({prof.name}, {prof.settings} settings): CHAOS_SEED={seed} "
        f"(replay: CHAOS_SEED={seed}{' CHAOS_LONG=1' if LONG else ''} pytest "
        "tests/faults/test_chaos.py)",
        flush=True,
    )
    c = cluster(defaults=prof.settings == "defaults")
    for n in range(prof.workers):
        c.start_worker("w", prof.concurrency, wait=n == prof.workers - 1)
    chaos = Chaos(c, prof, seed)
    started = time.time()
    chaos.run_phase()
    phase_end = time.time()
    ids, found, seen = drain(c, chaos, time.monotonic() + prof.drain)
    settle(c, ids)
    findings, extra = check(c, chaos, ids)

    faults = Counter(fault["kind"] for fault in chaos.faults)
    fault_at = min((fault["at"] for fault in chaos.faults), default=None)
    last = max(seen.values(), default=None)
    recovery = None
    if fault_at is not None and last is not None and not findings.counts["stuck"]:
        recovery = round(max(0.0, last - fault_at), 1)
    died = {w.name: why for w in list(c.workers) if (why := w.died())}
    st = extra["statuses"]
    rows = [
        ("seed", seed),
        ("form / settings", f"{prof.name} / {prof.settings} {prof.env()}"),
        ("bound", f"terminal within {prof.drain:.0f} s after a {prof.phase:.0f} s chaos phase"),
        ("runs (submitted / rows)", f"{len(chaos.runs)} / {len(ids)}"),
        ("non-series-parallel DAGs", chaos.non_sp),
        ("faults injected", f"{sum(faults.values())} {dict(faults)}"),
        (
            "succeeded / failed / cancelled",
            f"{st.get('succeeded', 0)} / {st.get('failed', 0)} "
            f"/ {st.get('cancelled', 0)}  (other: "
            f"{ {k: v for k, v in st.items() if k not in TERMINAL} })",
        ),
        ("pauses / cancels done", f"{chaos.pauses} / {len(chaos.cancel_asked)}"),
        *[(label, findings.counts[key]) for key, label in INVARIANTS],
        ("kill-induced failures (too_many_deliveries)", extra["kill_induced_failures"]),
        (
            "executions / re-executions / absorbed",
            f"{extra['executions']} / {extra['re_executions']} / {extra['absorbed']}",
        ),
        ("executions killed (no ended_at)", extra["killed_executions"]),
        ("ok attempts past their time limit (slow box)", extra["overran_time_limit"]),
        ("exercised", extra["coverage"]),
        ("recoveries", extra["recoveries"]),
        ("run seconds p50 / max", f"{extra['run_seconds_p50']} / {extra['run_seconds_max']}"),
        ("workers died by themselves", died or 0),
        ("driver errors (test's own calls)", len(chaos.driver_errors)),
    ]
    width = max(len(label) for label, _ in rows)
    print("\n" + "\n".join(f"  {label:<{width}}  {value}" for label, value in rows), flush=True)
    for key, label in INVARIANTS:
        if findings.details[key]:
            print(f"\n{label}: {findings.counts[key]}")
            for line in findings.details[key][:12]:
                print(f"  - {line}")
    for error in chaos.driver_errors[:8]:
        print(f"  driver: {error}")
    shown: list[str] = []
    for key, _ in INVARIANTS:
        shown += [r for r in sorted(findings.runs[key]) if r not in shown][:2]
    for run in shown[:8]:
        print(f"\n{c.diagnose(run)}"[:3000])
        for line in worker_lines(c, run):
            print(f"    {line}")

    outcome = Outcome(
        test=f"chaos {prof.name} (seed {seed}, {prof.settings} settings)",
        submitted=len(ids),
        terminal=sum(1 for r in ids if found.get(r) in TERMINAL),
        succeeded=st.get("succeeded", 0),
        failed=st.get("failed", 0),
        cancelled=st.get("cancelled", 0),
        lost=findings.counts["lost"],
        stuck=findings.counts["stuck"],
        duplicated_effects=findings.counts["duplicated"],
        re_executions=extra["re_executions"],
        absorbed=extra["absorbed"],
        recovery_seconds=recovery,
        elapsed_seconds=round(time.time() - started, 1),
        notes={
            "seed": seed,
            "form": prof.name,
            "settings": prof.settings,
            "bound_s": prof.drain,
            "phase_s": prof.phase,
            "faults": dict(faults),
            "overlapping_executions": findings.counts["overlap"],
            "attempt_mismatches": findings.counts["attempts"],
            "wrong_outcomes": findings.counts["outcome"],
            "inconsistent_statuses": findings.counts["inconsistent"],
            "non_series_parallel": chaos.non_sp,
            "drain_s": round(time.time() - phase_end, 1),
            **{k: v for k, v in extra.items() if k != "statuses" and v},
            **({"workers_died": died} if died else {}),
        },
    )
    outcome.publish()
    violations = {key: findings.counts[key] for key, _ in INVARIANTS if findings.counts[key]}
    assert not violations, f"seed {seed}: {violations} (details above)"
    assert not died, f"a worker exited by itself (restarted as a supervisor would): {died}"
