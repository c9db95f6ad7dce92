"""Per-run state in Redis: control flag, step results, leases, joins and the completion signal.

Joins use sets, not counters, so a redelivered step is counted once. A step *claims* its run
before it executes (one script, one round trip): the claim reads the control flag and the
parents' results, refuses a step that already succeeded or that another live delivery holds,
counts deliveries, and takes a lease that the executing process keeps alive. A parent's result
that is missing is reported as such, never read as ``None``.

Values go through :mod:`orchestrator.codec` (Celery's JSON). When a run ends, its counters are
deleted (its results too, unless it failed or was cancelled: a retry inherits them) and its
control flag is kept, shorter, so that a late duplicate message stands down instead of running
again. Key names are in :mod:`.run_keys`, the Lua scripts in
:mod:`.run_scripts`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import redis

from orchestrator.codec import decode, encode
from orchestrator.errors import ServiceUnavailable
from orchestrator.records import Claim, EndNotice, Lease, Outcomes
from orchestrator.settings import redact
from orchestrator.stores.redis import run_scripts
from orchestrator.stores.redis.run_keys import (
    INPUTS,
    PUBLISHING,
    SINKS,
    done_channel,
    key,
    lease_key,
    retry_key,
    text,
)


class RunState:
    """Redis operations of the run lifecycle, one round trip each on the hot path."""

    def __init__(self, url: str, ttl: int, ended_ttl: int = 86400) -> None:
        self.url = url
        self.ttl = ttl
        self.ended_ttl = ended_ttl
        self.client: redis.Redis = redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=5, health_check_interval=30
        )
        self._claim = self.client.register_script(run_scripts.CLAIM)
        self._finish = self.client.register_script(run_scripts.FINISH)
        self._park = self.client.register_script(run_scripts.PARK)
        self._resume = self.client.register_script(run_scripts.RESUME)
        self._release = self.client.register_script(run_scripts.RELEASE)
        self._renew = self.client.register_script(run_scripts.RENEW)
        self._end = self.client.register_script(run_scripts.END)

    def ping(self) -> None:
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise ServiceUnavailable(
                "Redis",
                redact(self.url),
                str(exc),
                "Start Redis or set ORCHESTRATOR_REDIS_URL / ORCHESTRATOR_RESULT_BACKEND",
            ) from exc

    def init_run(
        self,
        run_id: str,
        inputs: dict[str, Any],
        results: dict[str, Any],
        done_sinks: tuple[str, ...] | list[str] = (),
    ) -> None:
        """Store the inputs and the results a retried or recovered run starts from."""
        pipe = self.client.pipeline(transaction=False)
        self._init(pipe, run_id, inputs, results, done_sinks)
        pipe.execute()

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
        """Claim a step before executing it (see the module docstring).

        ``steal``: a lease holder known to be dead (a pool process of this worker that was
        killed); its lease is taken over instead of reported ``busy``.
        """
        keys = [
            key(run_id, "ctl"),
            key(run_id, "res"),
            lease_key(run_id, step_id, attempt),
            key(run_id, "deliveries"),
            retry_key(run_id, step_id, attempt),
            key(run_id, "attempt"),
            key(run_id, "start"),
        ]
        args: list[str | int] = [
            step_id,
            owner,
            lease_ms,
            self.ttl,
            steal,
            f"{step_id}:{attempt}",
            attempt,
            repr(time.time()),
            *parents,
        ]
        reply = self._claim(keys=keys, args=args)
        outcome = reply[0].decode()
        if outcome == "done":
            return Claim("done", result=decode(reply[1]))
        if outcome != "go":
            return Claim(outcome, flag=reply[1].decode())
        values = tuple(decode(v) for v in reply[2:])
        return Claim("go", deliveries=int(reply[1]), parents=values)

    def restore_results(self, run_id: str, results: dict[str, Any]) -> None:
        """Put results (from history) back where dependents read them."""
        res = key(run_id, "res")
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(res, mapping={k: encode(v) for k, v in results.items()})
        pipe.expire(res, self.ttl)
        pipe.execute()

    def fail(self, run_id: str, step_id: str | None, error: str) -> None:
        """Mark the run failed: nothing new starts; the reason is kept for the reconciler, which
        ends the run in history if the writer could not."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key(run_id, "ctl"), "failed", ex=self.ttl)
        pipe.set(key(run_id, "failure"), encode({"step": step_id, "error": error}), ex=self.ttl)
        pipe.execute()

    def failure(self, run_id: str) -> tuple[str, str | None, str | None] | None:
        """The run's control flag, with the failing step and error when it failed; None if no
        flag is set (or only ``paused``)."""
        flag, raw = self.client.mget([key(run_id, "ctl"), key(run_id, "failure")])
        if flag is None or flag == b"paused":
            return None
        detail = decode(raw) if raw else {}
        status = flag.decode() if isinstance(flag, bytes) else str(flag)
        return status, detail.get("step"), detail.get("error")

    def undo_delivery(self, run_id: str, step_id: str, attempt: int) -> None:
        """A delivery that did not execute the step (deferred by a breaker) is not counted."""
        self.client.hincrby(key(run_id, "deliveries"), f"{step_id}:{attempt}", -1)

    def expect_retry(
        self, run_id: str, step_id: str, attempt: int, message: dict[str, Any], due: float
    ) -> None:
        """Note the message of a step's next attempt until a delivery of it is claimed, so the
        reconciler can publish it again if it is lost on the way (broker error, dead process);
        and that ``attempt`` is now the step's current one: a late copy of an earlier attempt is
        stale and never runs again."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(
            retry_key(run_id, step_id, attempt),
            encode({"due": due, "message": message}),
            ex=self.ttl,
        )
        pipe.hset(key(run_id, "attempt"), step_id, attempt)
        pipe.expire(key(run_id, "attempt"), self.ttl)
        pipe.execute()

    def expected_retry(self, run_id: str, step_id: str, attempt: int) -> dict[str, Any] | None:
        """The noted next attempt (``due``, ``message``), or None if it was claimed or never
        noted."""
        raw = self.client.get(retry_key(run_id, step_id, attempt))
        return None if raw is None else dict(decode(raw))

    def current_attempts(self, run_id: str) -> dict[str, int]:
        """The current attempt of each step that was retried (``expect_retry``): a message of
        an earlier attempt is stale, so recovery publishes this one."""
        raw = self.client.hgetall(key(run_id, "attempt"))
        return {text(k): int(v) for k, v in raw.items()}

    def end(self, run_id: str, status: str) -> None:
        """The run ended: free its counters; keep the flag so late messages of the run stand
        down. A succeeded run's results are freed; a failed or cancelled run's are kept as long
        as the flag, with the results of steps that succeed after its end: a retry inherits
        them before history has caught up (``engine.inherit``)."""
        self._end(
            keys=[
                key(run_id, "ctl"),
                key(run_id, "res"),
                key(run_id, "deliveries"),
                key(run_id, "parked"),
                key(run_id, "attempt"),
                key(run_id, "fin"),
                key(run_id, "start"),
            ],
            args=[status, self.ended_ttl],
        )

    def release(self, run_id: str, step_id: str, attempt: int, owner: str) -> None:
        self._release(keys=[lease_key(run_id, step_id, attempt)], args=[owner])

    def renew(self, leases: dict[Lease, str], lease_ms: int) -> int:
        """Extend the leases (run, step, attempt) -> owner still held by their owners."""
        if not leases:
            return 0
        keys = [lease_key(run_id, step_id, attempt) for run_id, step_id, attempt in leases]
        return int(self._renew(keys=keys, args=[lease_ms, *leases.values()]))

    def lease_alive(self, run_id: str, step_id: str, attempt: int) -> bool:
        return bool(self.client.exists(lease_key(run_id, step_id, attempt)))

    def leased(self, run_id: str, leases: list[tuple[str, int]]) -> set[str]:
        """The steps among ``(step, attempt)`` pairs whose lease is held (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for step_id, attempt in leases:
            pipe.exists(lease_key(run_id, step_id, attempt))
        return {step for (step, _), held in zip(leases, pipe.execute(), strict=True) if held}

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
        the run's end.

        Returns, for each join and then for the sinks, whether this call added the step and the
        set's size after it.
        """
        joins_keys = [key(run_id, f"join:{j}") for j in [*joins, *([SINKS] if sink else [])]]
        lease = lease_key(run_id, step_id, attempt)
        replies = self._finish(
            keys=[key(run_id, "res"), lease, key(run_id, "fin"), *joins_keys],
            args=[step_id, encoded, self.ttl, owner, repr(time.time())],
        )
        counts = [
            (bool(added), int(card))
            for added, card in zip(replies[0::2], replies[1::2], strict=True)
        ]
        if sink:
            return counts[:-1], counts[-1]
        return counts, None

    def results(self, run_id: str, steps: list[str]) -> list[Any]:
        raw = self.client.hmget(key(run_id, "res"), steps) if steps else []
        return [None if r is None else decode(r) for r in raw]

    def stored(self, run_id: str, steps: list[str]) -> dict[str, Any]:
        """The results in Redis of those ``steps`` that have one (a ``None`` result included)."""
        raw = self.client.hmget(key(run_id, "res"), steps) if steps else []
        return {s: decode(r) for s, r in zip(steps, raw, strict=True) if r is not None}

    def outcomes(self, run_id: str, steps: list[str], times: bool = True) -> Outcomes:
        """The encoded results of those ``steps`` that have one, the current attempt of every
        step (or item) that was retried, and (``times``) when each was first claimed and when
        it finished; one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(key(run_id, "res"), steps)
        pipe.hgetall(key(run_id, "attempt"))
        pipe.get(key(run_id, "ctl"))
        if times:
            pipe.hgetall(key(run_id, "start"))
            pipe.hgetall(key(run_id, "fin"))
        raw, attempts, flag, *moments = pipe.execute()
        started, finished = moments or ({}, {})
        return Outcomes(
            {s: text(r) for s, r in zip(steps, raw, strict=True) if r is not None},
            {text(k): int(v) for k, v in attempts.items()},
            {text(k): float(v) for k, v in started.items()},
            {text(k): float(v) for k, v in finished.items()},
            None if flag is None else text(flag),
        )

    def reached(self, run_id: str, steps: list[str]) -> bool:
        """Whether each of ``steps`` was delivered (claimed at its first attempt) or has a
        result: what follows a step has seen its success."""
        if not steps:
            return True
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(key(run_id, "res"), steps)
        pipe.hmget(key(run_id, "deliveries"), [f"{s}:1" for s in steps])
        results, deliveries = pipe.execute()
        return all(r is not None or d is not None for r, d in zip(results, deliveries, strict=True))

    def inputs(self, run_id: str) -> dict[str, Any]:
        raw = self.client.hget(key(run_id, "res"), INPUTS)
        return {} if raw is None else dict(decode(raw))

    def set_flag(self, run_id: str, flag: str | None) -> None:
        ctl = key(run_id, "ctl")
        if flag is None:
            self.client.delete(ctl)
        else:
            self.client.set(ctl, flag, ex=self.ttl)

    def pause(self, run_id: str) -> None:
        """Set the pause flag, unless the run failed or was cancelled meanwhile."""
        self.client.set(key(run_id, "ctl"), "paused", ex=self.ttl, nx=True)

    def park(self, run_id: str, signature: dict[str, Any]) -> bool:
        """Keep a step's message while its run is paused; False if the run is no longer paused."""
        return bool(
            self._park(
                keys=[key(run_id, "ctl"), key(run_id, "parked")],
                args=[encode(signature), self.ttl],
            )
        )

    def resume(self, run_id: str) -> list[dict[str, Any]]:
        """Clear the pause and hand back the parked messages (each exactly once)."""
        parked = self._resume(keys=[key(run_id, "ctl"), key(run_id, "parked")])
        return [decode(p) for p in parked]

    def hold(self, run_id: str, what: str, seconds: float) -> bool:
        """Take a marker that expires after ``seconds``; False while someone else's exists."""
        return bool(self.client.set(key(run_id, what), 1, nx=True, px=int(seconds * 1000)))

    def lead(self, name: str, token: str, seconds: float) -> bool:
        """Take or keep the lock ``name`` for ``token`` (one leader among processes)."""
        ttl = int(seconds * 1000)
        if self.client.set(name, token, nx=True, px=ttl):
            return True
        if self.client.get(name) == token.encode():
            self.client.pexpire(name, ttl)
            return True
        return False

    def notify_done(self, run_id: str, status: str, output: str | None = None) -> None:
        """Announce the run's end: its status (history wrote it), or with the encoded
        ``output`` (its worker, before history: see :class:`EndNotice`)."""
        payload = status if output is None else encode({"status": status, "output": output})
        self.client.publish(done_channel(run_id), payload)

    def watch_done(
        self, run_id: str, timeout: float, tick: float = 2.0
    ) -> Iterator[EndNotice | None]:
        """Yields each announcement of the run's end, None every ``tick`` seconds meanwhile
        (and once at first).

        Subscribe first, then the caller checks PostgreSQL, so an end announced in between is
        still seen.
        """
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(done_channel(run_id))
            deadline = time.monotonic() + timeout
            yield None
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=min(tick, left))
                yield None if message is None else end_notice(text(message["data"]))
        finally:
            pubsub.close()

    # -- submit: the first call to Redis, and the runs being published (``engine.submit``)

    def begin_run(
        self,
        run_id: str,
        inputs: dict[str, Any],
        results: dict[str, Any],
        done_sinks: tuple[str, ...] | list[str] = (),
        publishing: bool = False,
    ) -> None:
        """``init_run`` as a submit's first call to Redis: Redis away raises
        ``ServiceUnavailable`` before anything is written to history. With ``publishing``, the
        run is also noted among the runs being published (in the same round trip) until
        ``confirm_published``."""
        pipe = self.client.pipeline(transaction=False)
        if publishing:
            pipe.zadd(PUBLISHING, {run_id: time.time()})
        self._init(pipe, run_id, inputs, results, done_sinks)
        try:
            pipe.execute()
        except redis.RedisError:
            self.ping()  # Redis away: the clear error
            raise

    def confirm_published(self, run_id: str) -> None:
        """The run's first messages were published (or it was not created): no longer noted."""
        self.client.zrem(PUBLISHING, run_id)

    def unconfirmed_runs(self, older_than: float, limit: int = 100) -> list[str]:
        """Runs noted as being published over ``older_than`` seconds ago (by this host's clock)
        and never confirmed, oldest first: their submitter died, or failed, in between."""
        found: list[bytes] = self.client.zrangebyscore(  # type: ignore[assignment]
            PUBLISHING, "-inf", time.time() - older_than, start=0, num=limit
        )
        return [text(r) for r in found]

    def _init(
        self,
        pipe: Any,
        run_id: str,
        inputs: dict[str, Any],
        results: dict[str, Any],
        done_sinks: tuple[str, ...] | list[str],
    ) -> None:
        res = key(run_id, "res")
        pipe.hset(
            res,
            mapping={INPUTS: encode(inputs), **{k: encode(v) for k, v in results.items()}},
        )
        pipe.expire(res, self.ttl)
        if done_sinks:
            pipe.sadd(key(run_id, f"join:{SINKS}"), *done_sinks)
            pipe.expire(key(run_id, f"join:{SINKS}"), self.ttl)

    # -- the reconciler: claims that lapsed before history saw their step start

    def lapsed_claims(self, run_ids: list[str]) -> list[Lease]:
        """The claimed ``(run, step, attempt)``s of those runs with no result, no live lease and
        no later attempt of the step (``expect_retry``), in one round trip: the process that
        claimed each died, or (Redis lost its lease) is about to renew it. A parked step's
        claim holds its parked owner's lease, or was not counted (``undo_delivery``)."""
        if not run_ids:
            return []
        script = self.client.register_script(run_scripts.LAPSED)
        pipe = self.client.pipeline(transaction=False)
        for run_id in run_ids:
            keys = [key(run_id, "deliveries"), key(run_id, "res"), key(run_id, "attempt")]
            script(keys=keys, args=[key(run_id, "lease:")], client=pipe)
        return [
            (run_id, text(step), int(attempt))
            for run_id, found in zip(run_ids, pipe.execute(), strict=True)
            for step, attempt in zip(found[0::2], found[1::2], strict=True)
        ]


def end_notice(payload: str) -> EndNotice:
    """An announcement as ``notify_done`` published it (an older worker's is the status)."""
    if not payload.startswith("{"):
        return EndNotice(payload)
    data = decode(payload)
    return EndNotice(str(data["status"]), data.get("output"))
