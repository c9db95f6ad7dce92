"""Per-run state in this process: the twin of ``stores.redis.runs``.

Each operation does under one lock what the Redis adapter does in one script or pipeline: a
claim reads the control flag and the parents' results, refuses a step that succeeded, a late copy
of an earlier attempt, or a step another owner holds, counts the delivery and takes a lease.
Values go through :mod:`orchestrator.codec` as they do into Redis, so a step's dependents see what
they would see there. Leases, holds and locks expire on the injectable ``clock``; nothing else
expires (Redis keeps the rest for ``result_expires``). The end of a run is announced to
:meth:`MemoryRunState.watch_done` through a condition variable instead of pub/sub.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from orchestrator.codec import decode, encode
from orchestrator.records import Claim, EndNotice, Lease, Outcomes
from orchestrator.status import RunStatus

INPUTS = "__inputs__"
SINKS = "sinks"


@dataclass
class _Run:
    """What Redis keeps under one run's keys."""

    flag: str | None = None
    failure: str | None = None
    results: dict[str, str] = field(default_factory=dict)
    deliveries: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    attempts: dict[str, int] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)
    retries: dict[tuple[str, int], str] = field(default_factory=dict)
    joins: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    parked: list[str] = field(default_factory=list)


class MemoryRunState:
    """The run-state operations of :class:`~orchestrator.ports.RunStateStore`, in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._runs: dict[str, _Run] = defaultdict(_Run)
        self._leases: dict[Lease, tuple[str, float]] = {}  # -> owner, expires at
        self._marks: dict[str, tuple[str, float]] = {}  # holds and locks -> token, expires at
        self._lock = threading.RLock()
        self._done = threading.Condition(self._lock)
        self._announced: dict[str, list[EndNotice]] = defaultdict(list)
        self._publishing: dict[str, float] = {}  # run id -> when noted (``begin_run``)

    def ping(self) -> None:
        """Always reachable."""

    def init_run(
        self,
        run_id: str,
        inputs: dict[str, Any],
        results: dict[str, Any],
        done_sinks: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Store the inputs and the results a retried or recovered run starts from."""
        values = {INPUTS: encode(inputs), **{k: encode(v) for k, v in results.items()}}
        with self._lock:
            run = self._runs[run_id]
            run.results.update(values)
            run.joins[SINKS].update(done_sinks)

    # -- a step's delivery: claim, lease, finish

    def claim(
        self,
        run_id: str,
        step_id: str,
        attempt: int,
        owner: str,
        lease_ms: int,
        parents: list[str],
        steal: str = "",
    ) -> Claim:
        """Claim a step before executing it (see the module docstring)."""
        with self._lock:
            run = self._runs[run_id]
            if run.flag is not None:
                return Claim("flag", flag=run.flag)
            if step_id in run.results:
                return Claim("done", result=decode(run.results[step_id]))
            current = run.attempts.get(step_id)
            if current is not None and current > attempt:
                return Claim("stale", flag=str(current))
            holder = self._holder((run_id, step_id, attempt))
            if holder is not None and holder not in (owner, steal):
                return Claim("busy", flag=holder)
            missing = [p for p in parents if p not in run.results]
            if missing:
                return Claim("missing", flag=missing[0])
            self._leases[(run_id, step_id, attempt)] = (owner, self.clock() + lease_ms / 1000)
            run.deliveries[f"{step_id}:{attempt}"] += 1
            run.retries.pop((step_id, attempt), None)
            run.started.setdefault(step_id, time.time())
            values = tuple(decode(run.results[p]) for p in parents)
            return Claim("go", deliveries=run.deliveries[f"{step_id}:{attempt}"], parents=values)

    def _holder(self, lease: Lease) -> str | None:
        found = self._leases.get(lease)
        if found is None or found[1] <= self.clock():
            return None
        return found[0]

    def release(self, run_id: str, step_id: str, attempt: int, owner: str) -> None:
        with self._lock:
            if self._holder((run_id, step_id, attempt)) == owner:
                del self._leases[(run_id, step_id, attempt)]

    def renew(self, leases: dict[Lease, str], lease_ms: int) -> int:
        """Extend the leases still held by their owners; re-create those that lapsed."""
        count = 0
        with self._lock:
            expires = self.clock() + lease_ms / 1000
            for lease, owner in leases.items():
                if self._holder(lease) in (owner, None):
                    self._leases[lease] = (owner, expires)
                    count += 1
        return count

    def lease_alive(self, run_id: str, step_id: str, attempt: int) -> bool:
        with self._lock:
            return self._holder((run_id, step_id, attempt)) is not None

    def leased(self, run_id: str, leases: list[tuple[str, int]]) -> set[str]:
        """The steps among ``(step, attempt)`` pairs whose lease is held."""
        with self._lock:
            return {s for s, a in leases if self._holder((run_id, s, a)) is not None}

    def undo_delivery(self, run_id: str, step_id: str, attempt: int) -> None:
        """A delivery that did not execute the step (deferred by a breaker) is not counted."""
        with self._lock:
            self._runs[run_id].deliveries[f"{step_id}:{attempt}"] -= 1

    def finish_step(
        self,
        run_id: str,
        step_id: str,
        encoded: str,
        joins: list[str],
        sink: bool,
        attempt: int,
        owner: str,
    ) -> tuple[list[tuple[bool, int]], tuple[bool, int] | None]:
        """Record the (encoded) result, release the lease, and count the step toward joins and
        the run's end: for each join and then for the sinks, whether this call added the step
        and the set's size after it."""
        with self._lock:
            run = self._runs[run_id]
            run.results[step_id] = encoded
            run.finished[step_id] = time.time()
            self.release(run_id, step_id, attempt, owner)
            counts = []
            for join in [*joins, *([SINKS] if sink else [])]:
                members = run.joins[join]
                added = step_id not in members
                members.add(step_id)
                counts.append((added, len(members)))
        if sink:
            return counts[:-1], counts[-1]
        return counts, None

    def restore_results(self, run_id: str, results: dict[str, Any]) -> None:
        """Put results (from history) back where dependents read them."""
        with self._lock:
            self._runs[run_id].results.update({k: encode(v) for k, v in results.items()})

    def results(self, run_id: str, steps: list[str]) -> list[Any]:
        with self._lock:
            raw = [self._runs[run_id].results.get(s) for s in steps]
        return [None if r is None else decode(r) for r in raw]

    def stored(self, run_id: str, steps: list[str]) -> dict[str, Any]:
        """The results of those ``steps`` that have one (a ``None`` result included)."""
        with self._lock:
            found = self._runs[run_id].results
            return {s: decode(found[s]) for s in steps if s in found}

    def outcomes(self, run_id: str, steps: list[str], times: bool = True) -> Outcomes:
        """The encoded results of those ``steps`` that have one, the current attempt of every
        step (or item) that was retried, and (``times``) when each was first claimed and when
        it finished."""
        with self._lock:
            run = self._runs[run_id]
            results = {s: run.results[s] for s in steps if s in run.results}
            if not times:
                return Outcomes(results, dict(run.attempts), {}, {}, run.flag)
            started, finished = dict(run.started), dict(run.finished)
            return Outcomes(results, dict(run.attempts), started, finished, run.flag)

    def reached(self, run_id: str, steps: list[str]) -> bool:
        """Whether each of ``steps`` was delivered at its first attempt or has a result."""
        with self._lock:
            run = self._runs[run_id]
            return all(s in run.results or f"{s}:1" in run.deliveries for s in steps)

    def inputs(self, run_id: str) -> dict[str, Any]:
        with self._lock:
            raw = self._runs[run_id].results.get(INPUTS)
        return {} if raw is None else dict(decode(raw))

    # -- retries

    def expect_retry(
        self, run_id: str, step_id: str, attempt: int, message: dict[str, Any], due: float
    ) -> None:
        """Note the next attempt's message until it is claimed; ``attempt`` is now the step's
        current one (a late copy of an earlier attempt is stale)."""
        with self._lock:
            run = self._runs[run_id]
            run.retries[(step_id, attempt)] = encode({"due": due, "message": message})
            run.attempts[step_id] = attempt

    def expected_retry(self, run_id: str, step_id: str, attempt: int) -> dict[str, Any] | None:
        with self._lock:
            raw = self._runs[run_id].retries.get((step_id, attempt))
        return None if raw is None else dict(decode(raw))

    def current_attempts(self, run_id: str) -> dict[str, int]:
        """The current attempt of each step that was retried."""
        with self._lock:
            run = self._runs.get(run_id)
            return dict(run.attempts) if run is not None else {}

    # -- the run's control flag and end

    def fail(self, run_id: str, step_id: str | None, error: str) -> None:
        """Mark the run failed: nothing new starts; the reason is kept for the reconciler."""
        with self._lock:
            run = self._runs[run_id]
            run.flag = "failed"
            run.failure = encode({"step": step_id, "error": error})

    def failure(self, run_id: str) -> tuple[str, str | None, str | None] | None:
        """The control flag with the failing step and error; None without a flag or paused."""
        with self._lock:
            run = self._runs[run_id]
            flag, raw = run.flag, run.failure
        if flag is None or flag == "paused":
            return None
        detail = decode(raw) if raw else {}
        return flag, detail.get("step"), detail.get("error")

    def set_flag(self, run_id: str, flag: str | None) -> None:
        with self._lock:
            self._runs[run_id].flag = flag

    def pause(self, run_id: str) -> None:
        """Set the pause flag, unless the run failed or was cancelled meanwhile."""
        with self._lock:
            run = self._runs[run_id]
            if run.flag is None:
                run.flag = "paused"

    def park(self, run_id: str, signature: dict[str, Any]) -> bool:
        """Keep a step's message while its run is paused; False if it is no longer paused."""
        with self._lock:
            run = self._runs[run_id]
            if run.flag != "paused":
                return False
            run.parked.append(encode(signature))
            return True

    def resume(self, run_id: str) -> list[dict[str, Any]]:
        """Clear the pause and hand back the parked messages (each exactly once)."""
        with self._lock:
            run = self._runs[run_id]
            if run.flag == "paused":
                run.flag = None
            parked, run.parked = run.parked, []
        return [decode(p) for p in parked]

    def hold(self, run_id: str, what: str, seconds: float) -> bool:
        """Take a marker that expires after ``seconds``; False while someone else's exists."""
        return self._mark(f"{run_id}:{what}", "1", seconds, renew=False)

    def lead(self, name: str, token: str, seconds: float) -> bool:
        """Take or keep the lock ``name`` for ``token`` (one leader among callers)."""
        return self._mark(name, token, seconds, renew=True)

    def _mark(self, name: str, token: str, seconds: float, renew: bool) -> bool:
        with self._lock:
            now = self.clock()
            found = self._marks.get(name)
            if found is not None and found[1] > now and not (renew and found[0] == token):
                return False
            self._marks[name] = (token, now + seconds)
            return True

    def end(self, run_id: str, status: RunStatus) -> None:
        """The run ended: free its counters (and a succeeded run's results: a failed or
        cancelled run's are kept for its retry); keep the flag so late messages of the run
        stand down."""
        with self._lock:
            run = self._runs[run_id]
            run.flag = str(status)
            run.started.clear()
            run.finished.clear()
            if status == RunStatus.SUCCEEDED:
                run.results.clear()
            run.deliveries.clear()
            run.parked.clear()
            run.attempts.clear()

    def forget_run(self, run_id: str) -> None:
        """Lose everything of the run, as Redis does when it restarts without its data (a
        test's fault)."""
        with self._lock:
            self._runs.pop(run_id, None)
            for lease in [lease for lease in self._leases if lease[0] == run_id]:
                del self._leases[lease]

    def notify_done(self, run_id: str, status: RunStatus, output: str | None = None) -> None:
        with self._done:
            self._announced[run_id].append(EndNotice(status, output))
            self._done.notify_all()

    def watch_done(
        self, run_id: str, timeout: float, tick: float = 2.0
    ) -> Iterator[EndNotice | None]:
        """Yields each announcement of the run's end, None every ``tick`` seconds meanwhile
        (and once at first); an end announced after the first yield is seen (as with
        subscribing first)."""
        with self._lock:
            seen = len(self._announced[run_id])
        deadline = time.monotonic() + timeout
        yield None
        while (left := deadline - time.monotonic()) > 0:
            with self._done:
                self._done.wait_for(partial(self._news, run_id, seen), min(tick, left))
                notices = self._announced[run_id]
                notice = notices[seen] if self._news(run_id, seen) else None
                seen += notice is not None
            yield notice

    def _news(self, run_id: str, seen: int) -> bool:
        return len(self._announced[run_id]) > seen

    # -- submit: the first call to Redis, and the runs being published (``engine.submit``)

    def begin_run(
        self,
        run_id: str,
        inputs: dict[str, Any],
        results: dict[str, Any],
        done_sinks: tuple[str, ...] | list[str] = (),
        publishing: bool = False,
    ) -> None:
        """``init_run``, and with ``publishing`` a note that the run is being published until
        ``confirm_published``."""
        with self._lock:
            self.init_run(run_id, inputs, results, done_sinks)
            if publishing:
                self._publishing[run_id] = self.clock()

    def confirm_published(self, run_id: str) -> None:
        with self._lock:
            self._publishing.pop(run_id, None)

    def unconfirmed_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Runs noted as being published over ``older_than`` seconds ago, oldest first."""
        cutoff = self.clock() - older_than
        with self._lock:
            noted = sorted((at, run_id) for run_id, at in self._publishing.items() if at <= cutoff)
        return [run_id for _, run_id in noted[:limit]]

    # -- the reconciler: claims that lapsed before history saw their step start

    def lapsed_claims(self, run_ids: list[str]) -> list[Lease]:
        """The claimed ``(run, step, attempt)``s of those runs with no result, no live lease and
        no later attempt of the step."""
        found: list[Lease] = []
        with self._lock:
            for run_id in run_ids:
                run = self._runs.get(run_id) or _Run()
                for field, count in run.deliveries.items():
                    step, _, number = field.rpartition(":")
                    attempt = int(number)
                    if (
                        count > 0
                        and step not in run.results
                        and run.attempts.get(step, attempt) <= attempt
                        and self._holder((run_id, step, attempt)) is None
                    ):
                        found.append((run_id, step, attempt))
        return found
