"""The reconciler: every run reaches an end, whatever died on the way.

It runs as a thread in the main process of every worker; a lock in Redis lets one of them work
at a time. Each pass (every ``ORCHESTRATOR_RECONCILE_INTERVAL`` seconds):

1. finishes runs whose steps have all ended but whose run row has not (a lost final write),
   and repairs concurrency slots (``ops.slots``: lost state rebuilt, slots of ended runs freed);
2. publishes runs recorded but never published (the submitter died between the two: history
   or, for a run without a concurrency limit, Redis says so), unless they wait in line for a
   concurrency slot;
3. publishes again the next attempt of a retrying step that is overdue and was never claimed
   (lost at publish during a broker error, or with the process that held it);
4. recovers runs with a step whose lease lapsed (its worker died: SIGKILL, OOM, power) and runs
   that stalled (nothing running or finishing for ``ORCHESTRATOR_STALL_TIMEOUT`` seconds while a
   step is ready, e.g. messages lost with a Redis restart). A lease counts as lapsed only once it
   has been missing for a whole lease period: a process that is alive re-creates its lease
   within a third of that (after a Redis restart, say), and must not see its step run twice.
   The leases looked at are those of the steps history shows running and, in the runs history
   shows quiet for a lease period, of the attempts claimed in Redis that have no result (a
   worker killed within its history writer's flush window leaves its step pending in history)
   and of the steps that have a result in Redis but have not ended in history (killed after
   the result, before its history and what follows it: a chord's count, a chain's next link).
   With the default settings (lease 30 s, a pass every 5 s) a killed step's run is recovered
   about 60-70 s after the kill: its lease expires up to 30 s after it, is then missing for a
   lease period, and the next pass re-plans the run. A run whose pending steps' queues still
   hold messages is waiting in a backlog, not stalled;
5. fails the running steps of runs that ended whose worker died (nothing else would end them);
6. wakes sleeping and waiting steps (``engine.sleeping``) that are due, or whose signal
   arrived, but were not woken (their wake-up was lost with Redis): their timers are in
   PostgreSQL.
7. fails the steps not received by a worker within their ``queue_timeout`` of becoming ready
   (``ops.queue_timeouts``), also when no worker consumes their queue.

A run that Redis says failed or was cancelled, but whose end never reached PostgreSQL (the
writer's process died, or PostgreSQL was down past its retries), is ended, not recovered. A run
with a step still running elsewhere (a live lease) is left until that step ends. A broker error
while recovering leaves the run as it was, for the next pass.

Recovery is in place (:mod:`orchestrator.ops.recovery`): the steps that succeeded keep their
results (from PostgreSQL), and the rest of the DAG is planned again under a new *epoch* and
published. Delivery is at least once;
a step's claim (``stores.runs``) makes a duplicate delivery of a step that is running or done a
no-op, and ``current_run.idempotency_key`` lets effects be written once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from kombu.exceptions import ChannelError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.core.spec import WorkflowSpec
from orchestrator.engine.children import ended_child
from orchestrator.engine.hooks import on_run_ended
from orchestrator.engine.services import Services
from orchestrator.engine.sleeping import wake_due
from orchestrator.errors import ServiceUnavailable
from orchestrator.ops.queue_timeouts import expire_queued
from orchestrator.ops.recovery import (
    ended_unrecorded,
    fan_out_busy,
    record_unrecorded,
    recover_run,
)
from orchestrator.ops.slots import may_publish, repair_slots
from orchestrator.records import Lease
from orchestrator.status import RunStatus, StepStatus

log = logging.getLogger("orchestrator.recovery")
LOCK = "orch:reconciler"
CLAIM_CANDIDATES = 100
"""Most quiet runs a pass asks Redis about, drawn at random, for claims whose step's start
history never saw (besides the runs that had such a claim the pass before)."""


class Reconciler:
    """The reconciler thread of one worker process."""

    def __init__(self, rt: Services, clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.clock = clock  # how long a lease has been missing is measured on it
        self.token = uuid.uuid4().hex
        self._missing: dict[tuple[str, str, int], float] = {}
        self._orphans: dict[tuple[str, str, int], float] = {}
        self._claim_runs: set[str] = set()  # runs with a lapsed claim last pass
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="orchestrator-reconciler", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = self.rt.settings.reconcile_interval
        while not self._stop.wait(interval):
            try:
                if self._leader(interval):
                    self.pass_once()
            except (redis.RedisError, SQLAlchemyError, ServiceUnavailable, OSError) as exc:
                log.warning("reconciler pass skipped: %s", exc)
            except Exception:  # never let the thread die: the next pass tries again
                log.exception("reconciler pass failed")

    def _leader(self, interval: float) -> bool:
        return self.rt.state.lead(LOCK, self.token, interval * 3)

    def pass_once(self) -> dict[str, int]:
        """One reconciliation pass; how many runs each check acted on."""
        self.rt.history.fold_metrics()  # keeps the metrics' delta table short
        return {
            "finished": self._finish_settled(),
            "recorded": self._record_lagging(),
            "slots": repair_slots(self.rt),
            "published": self._publish_unpublished(),
            "republished": self._republish_late_retries(),
            "recovered": self._recover_stalled(),
            "orphans_ended": self._end_orphans(),
            "woken": wake_due(self.rt, self._backlog()),
            "queue_timeouts": expire_queued(self.rt),
        }

    def _finish_settled(self) -> int:
        return sum(
            self._each(run_id, self._finish, status)
            for run_id, status in self.rt.history.settled_runs()
        )

    def _record_lagging(self) -> int:
        """Runs whose output was written but that did not succeed: a step's success reached
        Redis and its history died with its process (killed before its writer flushed; no copy
        of its message comes back to record it). Record those steps from Redis; the run then
        succeeds with the write."""
        age = self.rt.settings.reconcile_interval
        return sum(
            self._each(run_id, self._record_steps)
            for run_id in self.rt.history.output_written_runs(age)
        )

    def _record_steps(self, run_id: str) -> bool:
        found = record_unrecorded(self.rt, run_id, self.rt.history.get_steps(run_id))
        if found:
            log.warning("run %s: recorded %d step(s) whose history was lost", run_id, len(found))
        return bool(found)

    def _finish(self, run_id: str, status: RunStatus) -> bool:
        output = self._output(run_id) if status == RunStatus.SUCCEEDED else None
        error = None if status == RunStatus.SUCCEEDED else "finished by the reconciler"
        if not self.rt.history.finish_settled(run_id, status, output, error):
            return False
        self.rt.state.notify_done(run_id, status)
        on_run_ended(self.rt, run_id, status)
        self.rt.state.end(run_id, status)
        return True

    @staticmethod
    def _each(run_id: str, act: Callable[..., bool], *args: Any) -> bool:
        """``act`` on one run; an error is logged and the pass goes on with the other runs."""
        try:
            return act(run_id, *args)
        except (redis.RedisError, SQLAlchemyError, ServiceUnavailable, OSError):
            raise  # a server is away: the whole pass waits for the next interval
        except Exception:
            log.exception("reconciler: run %s skipped this pass", run_id)
            return False

    def _output(self, run_id: str) -> Any:
        record = self.rt.history.get_run(run_id)
        data = self.rt.history.load_spec(record.workflow_version) if record else None
        try:
            sinks = WorkflowSpec.model_validate(data).sinks if data else []
        except ValidationError:  # a spec this version cannot read: the run ends without output
            log.warning("run %s: its stored spec is not valid; finished without output", run_id)
            return None
        if not sinks:
            return None
        results = {s.step_id: s.result for s in self.rt.history.get_steps(run_id)}
        return results[sinks[0]] if len(sinks) == 1 else {s: results[s] for s in sinks}

    def _publish_unpublished(self) -> int:
        """Publish the runs recorded a lease period ago and never published: those history
        shows unpublished (a run with a concurrency limit), and those Redis still notes as
        being published (``engine.submit``: its submitter died between the two)."""
        lease = self.rt.settings.lease_seconds
        unpublished = self.rt.history.unpublished_runs(older_than=lease)
        noted = self.rt.state.unconfirmed_runs(older_than=lease)
        return sum(
            self._each(run_id, self._recover, "recorded but never published")
            for run_id in unpublished
            if self._each(run_id, self._may_publish)  # a run waiting for a slot stays in line
        ) + sum(self._each(run_id, self._publish_noted) for run_id in noted)

    def _may_publish(self, run_id: str) -> bool:
        return may_publish(self.rt, run_id)

    def _publish_noted(self, run_id: str) -> bool:
        """Publish a run noted as being published if history still shows it pending (its
        submitter died before publishing it), then take the note off: a run not recorded, or
        that moved on, is left as it is."""
        record = self.rt.history.get_run(run_id)
        published = False
        if record is not None and record.status == RunStatus.PENDING:
            published = self._recover(run_id, "recorded but never published")
        self.rt.state.confirm_published(run_id)
        return published

    def _recover(self, run_id: str, reason: str) -> bool:
        return recover_run(self.rt, run_id, reason) is not None

    def _lapsed(self) -> set[str]:
        """Runs with a step whose lease has been missing for a whole lease period: a step that
        history shows running, or a claim history never saw start (:meth:`_lapsed_claims`)."""
        lease = self.rt.settings.lease_seconds
        suspects = self.rt.history.suspect_steps(lease) + self._lapsed_claims(lease)
        self._missing = self._still_missing(suspects, self._missing)
        sizes: dict[str, int] = {}  # a fanned-out for_each step holds no lease: lost if idle
        return {
            run
            for run, step, _ in self._gone(self._missing)
            if not fan_out_busy(self.rt, run, step, lambda r: self._queued(r, sizes))
        }

    def _lapsed_claims(self, lease: float) -> list[Lease]:
        """Claimed attempts whose start history never saw (their process was killed before its
        writer flushed): Redis is asked about the runs history shows quiet for a lease period
        (at most :data:`CLAIM_CANDIDATES` at random, and those with a suspect last pass, which
        must stay suspect a lease period to count). A parked step, or one waiting for its child run,
        holds a lease in its waiting owner's name, so it is never among them."""
        quiet = self.rt.history.stalled_runs(lease, limit=CLAIM_CANDIDATES)
        runs = list(dict.fromkeys([*quiet, *self._claim_runs]))  # suspects stay asked about
        found = self.rt.state.lapsed_claims(runs) + self._ended_unrecorded(runs) if runs else []
        self._claim_runs = {run for run, _, _ in found}
        return found

    def _ended_unrecorded(self, quiet: list[str]) -> list[Lease]:
        """Steps of quiet runs that ended in Redis (a result) while history shows them not
        ended: their process was killed after their result and before their history and
        what follows them (a chord's count, the next link): nothing else moves the run on."""
        found: list[Lease] = []
        for run_id in quiet:
            steps = self.rt.history.get_steps(run_id)
            ended = ended_unrecorded(self.rt, run_id, steps)
            found += [(run_id, s.step_id, max(1, s.attempts)) for s in steps if s.step_id in ended]
        return found

    def _still_missing(
        self, suspects: list[tuple[str, str, int]], seen: dict[tuple[str, str, int], float]
    ) -> dict[tuple[str, str, int], float]:
        """The suspects whose lease is missing now, with when it was first seen missing."""
        now, state = self.clock(), self.rt.state
        return {s: seen.get(s, now) for s in suspects if not state.lease_alive(*s)}

    def _gone(self, missing: dict[tuple[str, str, int], float]) -> list[tuple[str, str, int]]:
        lease, now = self.rt.settings.lease_seconds, self.clock()
        return [found for found, since in missing.items() if now - since >= lease]

    def _end_orphans(self) -> int:
        """Fail the running steps of ended runs whose worker died (no one else would)."""
        lease = self.rt.settings.lease_seconds
        orphaned = self.rt.history.orphaned_steps(lease)
        self._orphans = self._still_missing(orphaned, self._orphans)
        error = "its worker died after the run had ended (lease lapsed)"
        return sum(
            self.rt.history.fail_orphan(run, step, error)
            for run, step, _ in self._gone(self._orphans)
        ) + sum(self._end_waiting(run, step) for run, step, _ in orphaned)

    def _end_waiting(self, run_id: str, step_id: str) -> bool:
        """End a step of an ended run that waited for a child run which has ended too."""
        child = ended_child(self.rt.history, run_id, step_id)
        if child is None:
            return False
        error = f"its run ended while it waited for child run {child.id} ({child.status})"
        return self.rt.history.fail_orphan(run_id, step_id, error)

    def _republish_late_retries(self) -> int:
        """Publish again the next attempt of a retrying step that is overdue and unclaimed."""
        # a duplicate of an attempt is harmless (claims), so a lease period is wait enough
        settings = self.rt.settings
        count, grace = 0, max(settings.lease_seconds, 2 * settings.reconcile_interval)
        for run_id, step_id, attempts in self.rt.history.late_retries(grace):
            count += self._each(run_id, self._late_retry, step_id, attempts + 1, grace)
        return count

    def _late_retry(self, run_id: str, step_id: str, attempt: int, grace: float) -> bool:
        state = self.rt.state
        expected = state.expected_retry(run_id, step_id, attempt)
        if expected is None:  # never noted, or claimed by a process that died before recording
            if state.lease_alive(run_id, step_id, attempt):
                return False
            return self._recover(run_id, f"attempt {attempt} of step {step_id!r} was lost")
        late = time.time() - float(expected["due"])
        if late < grace or not state.hold(run_id, f"republish:{step_id}:{attempt}", grace):
            return False
        self.rt.app.signature(expected["message"]).apply_async()
        detail = f"attempt {attempt} of step {step_id!r} published again ({late:.0f}s overdue)"
        self.rt.history.add_event(run_id, "republished", detail)
        log.warning("run %s: %s", run_id, detail)
        return True

    def _recover_stalled(self) -> int:
        settings = self.rt.settings
        lost = self._lapsed()
        sizes: dict[str, int] = {}
        stalled = {
            run_id
            for run_id in set(self.rt.history.stalled_runs(settings.stall_timeout)) - lost
            if not self._queued(run_id, sizes)
        }
        died = [self._each(r, self._recover, "a step's worker died (lease lapsed)") for r in lost]
        stall = [
            self._each(r, self._recover, "stalled: nothing running, a step ready") for r in stalled
        ]
        return sum(died) + sum(stall)

    def _backlog(self) -> Callable[[str], bool]:
        """Whether a queue holds messages, asked once per queue per pass."""
        sizes: dict[str, int] = {}

        def held(queue: str) -> bool:
            if queue not in sizes:
                sizes[queue] = queue_size(self.rt.app, queue)
            return sizes[queue] > 0

        return held

    def _queued(self, run_id: str, sizes: dict[str, int]) -> bool:
        """Whether a queue a pending step of the run uses still holds messages: then the run
        is waiting its turn in a backlog, not stalled (its message is among them or behind)."""
        record = self.rt.history.get_run(run_id)
        data = self.rt.history.load_spec(record.workflow_version) if record else None
        if data is None:
            return False
        steps = self.rt.history.get_steps(run_id)
        pending = {s.step_id for s in steps if s.status == StepStatus.PENDING}
        default = str(self.rt.app.conf.task_default_queue)
        queues = {
            s.queue or default for s in WorkflowSpec.model_validate(data).steps if s.id in pending
        }
        for queue in queues:
            if queue not in sizes:
                sizes[queue] = queue_size(self.rt.app, queue)
        return any(sizes[q] > 0 for q in queues)


def queue_size(app: Any, queue: str) -> int:
    """Messages waiting in a broker queue (Redis or RabbitMQ); 0 for a queue that does not
    exist."""
    with app.connection_for_write() as conn:
        try:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError:
            return 0
