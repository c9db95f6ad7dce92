"""Flow control on a real worker: what a limit costs a step that is never held back by it.

Run ``python bench/bench_flow_control.py [--only NAME]`` from the project root (PostgreSQL and
Redis on 127.0.0.1; the services, the database and the worker are those of
``bench/bench_canvas.py``). Each section is a function of :data:`BENCHES` that returns the lines
of its report:

* ``rate_limit`` (:func:`bench_rate_limit`): the cost of one rate-limit check (the Lua script
  of ``stores.redis.rate_limits``, timed from this process against a plain ``PING``), and
  steps/s of a ``for_each`` of no-op items with a rate limit that is never hit against the same
  workflow without one, on one worker (prefork, two processes).
* ``concurrency`` (:func:`bench_concurrency`): the cost of a workflow concurrency check per
  run (the slot store's ``acquire`` at submit and ``release`` at the run's end, each a Lua
  script of ``stores.redis.slots``, and the CEL key), and runs/s of one-step no-op runs with a
  limit per key that is never hit against the same workflow without one.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_canvas  # noqa: E402  (after the path is set)
from bench.bench_canvas import (  # noqa: E402
    WAIT_TIMEOUT,
    Sample,
    running_worker,
    sampled,
    setup_services,
    tasks_module,
    teardown_services,
)

# -- rate limits --------------------------------------------------------------------------------

NEVER_LIMIT, NEVER_PERIOD = 1_000_000, 1.0  # a rate limit that no run here comes near


def limit_check_cost(calls: int = 3000) -> tuple[float, float]:
    """Median microseconds of one ``acquire`` (the Lua script, one round trip) and of one
    ``PING``, called in turn (medians of single calls: other load on the machine moves means)."""
    import redis

    from orchestrator.stores.redis.rate_limits import RedisRateLimits

    client = redis.Redis.from_url(bench_canvas.REDIS_URL)
    limits = RedisRateLimits(client)
    key = f"bench-check-{uuid.uuid4().hex[:6]}"
    limits.acquire(key, 1, 1.0, "warm")  # loads the script
    checks, pings = [], []
    for n in range(calls):
        started = time.perf_counter()
        limits.acquire(key, NEVER_LIMIT, NEVER_PERIOD, str(n))
        checks.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - started)
    return statistics.median(checks) * 1e6, statistics.median(pings) * 1e6


def mapped(items: int, limited: bool) -> Any:
    from orchestrator import Workflow

    tasks = tasks_module()
    name = f"bench-rate-{'limited' if limited else 'free'}-{items}"
    rate_limit = {"key": "bench-never-hit", "limit": NEVER_LIMIT, "period": NEVER_PERIOD}
    wf = Workflow(name).step("list", tasks.numbers)
    return wf.step(
        "each",
        tasks.noop,
        for_each="list",
        max_items=items,
        rate_limit=rate_limit if limited else None,
    ).spec


def run_mapped(spec: Any, items: int) -> float:
    """Seconds from submit until the run's output (``items`` results) is back."""
    from orchestrator import run_workflow

    started = time.perf_counter()
    output = run_workflow(spec, {"count": items}).wait(timeout=WAIT_TIMEOUT)
    assert output == [None] * items
    return time.perf_counter() - started


def bench_rate_limit(logs: Path, items: int = 500, repeats: int = 5) -> list[str]:
    """The rate-limit section: the check's cost, and steps/s and the worker's CPU per step
    with a rate limit that is never hit and without one."""
    check, ping = limit_check_cost()
    specs = {limited: mapped(items, limited) for limited in (False, True)}
    samples: dict[bool, list[Sample]] = {False: [], True: []}
    with running_worker(logs / "rate-limit-worker.log") as worker:
        run_mapped(specs[False], 50)  # warm the worker (imports, plan cache)
        for _ in range(repeats):  # alternate, so drift in the machine's load hits both sides
            for limited in (False, True):
                run = functools.partial(run_mapped, specs[limited], items)
                samples[limited].append(sampled(worker, run))
    rate = {k: items / statistics.median(s.wall for s in v) for k, v in samples.items()}
    cpu = {k: 1000 * statistics.median(s.worker_cpu for s in v) / items for k, v in samples.items()}
    return [
        f"rate limit check (Lua, one round trip): {check:.0f} µs; a PING: {ping:.0f} µs; "
        f"the script itself: ~{check - ping:.0f} µs (medians of single calls)",
        f"for_each of {items} no-op items, median of {repeats}: without a rate limit "
        f"{rate[False]:.0f} steps/s, {cpu[False]:.2f} ms worker CPU per step; with one never "
        f"hit {rate[True]:.0f} steps/s ({(rate[True] / rate[False] - 1) * 100:+.1f}%), "
        f"{cpu[True]:.2f} ms worker CPU per step ({(cpu[True] - cpu[False]) * 1000:+.0f} µs)",
    ]


# -- concurrency limits -------------------------------------------------------------------------

NEVER_RUNS = 1_000_000  # a concurrency limit that no run here comes near


def slot_check_cost(calls: int = 3000) -> tuple[float, float, float, float]:
    """Median microseconds of one slot ``acquire`` (at submit) and one ``release`` (at the
    run's end), each a Lua script and one round trip, of a ``PING``, and of evaluating the CEL
    key over a run's inputs (in this process)."""
    import redis

    from orchestrator.core.concurrency import ConcurrencySpec, key_of, slot_name
    from orchestrator.stores.redis.slots import RedisSlots

    client = redis.Redis.from_url(bench_canvas.REDIS_URL)
    slots = RedisSlots(client, prefix=f"bench:cc:{uuid.uuid4().hex[:6]}:")
    cc = ConcurrencySpec(max_runs=NEVER_RUNS, key="inputs.tenant")
    slot = slot_name("bench", key_of("bench", cc, {"tenant": "warm"}))
    slots.release(slot, "warm")  # loads the scripts
    acquires, releases, pings, keys = [], [], [], []
    for n in range(calls):
        started = time.perf_counter()
        key_of("bench", cc, {"tenant": f"t{n % 10}"})
        keys.append(time.perf_counter() - started)
        started = time.perf_counter()
        slots.acquire(slot, str(n), NEVER_RUNS, "queue")
        acquires.append(time.perf_counter() - started)
        started = time.perf_counter()
        slots.release(slot, str(n))
        releases.append(time.perf_counter() - started)
        started = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - started)
    return tuple(statistics.median(x) * 1e6 for x in (acquires, releases, pings, keys))  # type: ignore[return-value]


def one_step(limited: bool) -> Any:
    from orchestrator import Workflow

    cc = {"max_runs": NEVER_RUNS, "key": "inputs.tenant"} if limited else None
    name = f"bench-cc-{'limited' if limited else 'free'}"
    return Workflow(name, concurrency=cc).step("only", tasks_module().noop).spec


def run_many(spec: Any, runs: int) -> float:
    """Seconds from the first submit until every run's output is back (submitted at once)."""
    from orchestrator import run_workflow

    started = time.perf_counter()
    handles = [run_workflow(spec, {"tenant": f"t{n % 10}"}) for n in range(runs)]
    for handle in handles:
        handle.wait(timeout=WAIT_TIMEOUT)
    return time.perf_counter() - started


def bench_concurrency(logs: Path, runs: int = 200, repeats: int = 3) -> list[str]:
    """The concurrency section: the slot checks' cost per run, and runs/s and the worker's
    CPU per run with a limit that is never hit and without one."""
    acquire, release, ping, key = slot_check_cost()
    specs = {limited: one_step(limited) for limited in (False, True)}
    samples: dict[bool, list[Sample]] = {False: [], True: []}
    with running_worker(logs / "concurrency-worker.log") as worker:
        run_many(specs[False], 20)  # warm the worker (imports, plan cache)
        run_many(specs[True], 20)
        for _ in range(repeats):  # alternate, so drift in the machine's load hits both sides
            for limited in (False, True):
                samples[limited].append(
                    sampled(worker, functools.partial(run_many, specs[limited], runs))
                )
    rate = {k: runs / statistics.median(s.wall for s in v) for k, v in samples.items()}
    cpu = {k: 1000 * statistics.median(s.worker_cpu for s in v) / runs for k, v in samples.items()}
    return [
        f"concurrency check per run: slot acquire (Lua, at submit) {acquire:.0f} µs + release "
        f"(Lua, at the run's end) {release:.0f} µs + CEL key {key:.0f} µs; a PING: {ping:.0f} µs "
        "(medians of single calls)",
        f"{runs} one-step runs submitted at once, median of {repeats}: without a limit "
        f"{rate[False]:.0f} runs/s, {cpu[False]:.2f} ms worker CPU per run; with a limit never "
        f"hit {rate[True]:.0f} runs/s ({(rate[True] / rate[False] - 1) * 100:+.1f}%), "
        f"{cpu[True]:.2f} ms worker CPU per run ({(cpu[True] - cpu[False]) * 1000:+.0f} µs)",
    ]


BENCHES: dict[str, Callable[[Path], list[str]]] = {
    "rate_limit": bench_rate_limit,
    "concurrency": bench_concurrency,
}
"""Each section of this benchmark, by name: a function of a log directory -> report lines."""


MARKER = "orchestrator:bench-db-held"
"""Held on a Redis db while a benchmark uses it (expires after two hours)."""


def use_own_services() -> None:
    """Run beside other benchmarks and test sessions: a Redis db above theirs (test sessions
    claim and empty dbs 13, 12, ...; ``bench_canvas`` uses 12), held by :data:`MARKER`, and a
    database named for it; ``bench_canvas``'s helpers read both names when called. Call
    :func:`hold` again after ``setup_services`` empties it."""
    import redis

    for db in (14, 15):
        url = f"redis://127.0.0.1:6379/{db}"
        if redis.Redis.from_url(url).set(MARKER, os.getpid(), nx=True, ex=7200):
            bench_canvas.REDIS_URL = url
            bench_canvas.DB_NAME = f"orchestrator_bench_flow_control_{db}"
            return
    raise SystemExit(f"Redis dbs 14 and 15 are both held ({MARKER}); try again later")


def hold() -> None:
    """Put the marker back on this benchmark's Redis db (``setup_services`` emptied it)."""
    import redis

    redis.Redis.from_url(bench_canvas.REDIS_URL).set(MARKER, os.getpid(), ex=7200)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(BENCHES), help="run one section")
    args = parser.parse_args(argv)
    chosen = [args.only] if args.only else list(BENCHES)
    use_own_services()
    setup_services()
    hold()
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-flow-control-") as logs:
            for name in chosen:
                print(f"{name}...", flush=True)
                lines += [f"[{name}] {line}" for line in BENCHES[name](Path(logs))]
    finally:
        teardown_services()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
