"""Orchestrator workflows vs raw Celery canvas of the same no-op task, in one run on one machine.

Run ``python bench/bench_canvas.py [--quick]`` from the project root (PostgreSQL and Redis on
127.0.0.1). The script creates its own database (``orchestrator_bench``), uses Redis db 12 as
broker, result backend and run state, starts one real prefork worker
(``celery -A orchestrator.worker worker -c 2``) importing ``bench.tasks``, and removes all of it
at the end. Both sides use the same Celery app and config (orchestrator's: JSON, late acks,
``task_track_started``, task events as the settings have them: off by default), the same worker
and the same task ``bench.tasks.noop``.

What is measured (wall time from building the canvas / calling ``run_workflow`` until the result
is known in the client; one warm-up run of each side first, then the median of 3 runs, 1 with
``--quick``; raw and orchestrator runs alternate):

- group: raw ``group(noop x1000)`` vs a workflow of 1000 root steps (no fan-in). The raw side
  waits on the last task id, then checks the others' results with one MGET (no GroupResult).
- chain: raw ``chain(noop x100)`` vs a 100-step linear workflow; raw waits on the last task id.
- chord: raw ``chord(group(noop x1000), noop)`` vs 1000 root steps + 1 step after all of them.
- ladder: 50 stages of ``a -> (b, c) -> d`` (200 tasks); raw is the explicit
  ``chain(a, chord([b, c], d), a, chord(...), ...)``, the workflow has the same edges.
- latency: a 3-step chain from submit to result, p50/p95 over 50 runs (10 with ``--quick``):
  raw ``chain(...).apply_async().get(interval=0.005)`` vs ``run_workflow(...).wait()``.
- message size: the largest broker message (JSON body + headers, logged by the
  ``before_task_publish`` hook in ``bench/tasks.py``) of a 50-stage and a 125-stage (500-step)
  ladder, raw vs orchestrator, measured with a second worker that has the hook switched on.

Reading the table: ``tasks/s`` is tasks divided by wall time; ``orch/raw`` is the orchestrator's
time over raw Celery's (1.00 = no cost, 2.00 = twice as slow); ``+ms/task`` is the extra wall time
per task, ``(orch - raw) / tasks``. With -c 2 on a 2-CPU machine the worker is CPU bound, so
``+ms/task`` is roughly the extra worker CPU a step costs. For message sizes ``orch/raw`` below 1
means the orchestrator's largest message is smaller.

The CPU table divides CPU seconds by tasks: ``wrk`` is the worker (main process and pool
children, from /proc), ``cli`` is this client process (publishing, waiting, and for the
orchestrator also planning and writing the run's rows). CPU is steadier than wall time when other
processes share the machine (the load average is printed under the tables); PostgreSQL's and
Redis's own CPU is not included. Figures are also merged into ``bench/results.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

REDIS_URL = "redis://127.0.0.1:6379/14"  # test sessions claim dbs 13 down to 1
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
DB_NAME = "orchestrator_bench"
RESULTS_PATH = ROOT / "bench" / "results.json"
WAIT_TIMEOUT = 180.0


# -- environment and services ---------------------------------------------------------------


def bench_env(redis_url: str = REDIS_URL, db_name: str = DB_NAME) -> dict[str, str]:
    """The ORCHESTRATOR_* settings of the client and the worker."""
    return {
        "ORCHESTRATOR_BROKER_URL": redis_url,
        "ORCHESTRATOR_RESULT_BACKEND": redis_url,
        "ORCHESTRATOR_REDIS_URL": redis_url,
        "ORCHESTRATOR_DATABASE_URL": f"{PG_SERVER}/{db_name}",
        "ORCHESTRATOR_TASK_MODULES": "bench.tasks",
        "ORCHESTRATOR_WORKFLOWS_PATH": str(ROOT / "bench"),  # no YAML workflows here
    }


def _admin(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)


def _flush_redis(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def setup_services(redis_url: str = REDIS_URL, db_name: str = DB_NAME) -> None:
    """Point this process (and the workers it starts) at the bench services: a fresh database
    ``db_name`` and an emptied Redis db ``redis_url``, tables migrated."""
    os.environ.update(bench_env(redis_url, db_name))
    from orchestrator.app import reset_default_app
    from orchestrator.settings import get_settings
    from orchestrator.stores.postgres.migrate import upgrade

    reset_default_app()
    get_settings.cache_clear()
    _admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{db_name}"')
    _flush_redis(redis_url)
    upgrade(get_settings().sqlalchemy_url)


def teardown_services(redis_url: str = REDIS_URL, db_name: str = DB_NAME) -> None:
    """Close our connections, drop the database, flush our Redis db."""
    from orchestrator.app import reset_default_app

    reset_default_app()
    _admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    _flush_redis(redis_url)


def tasks_module() -> Any:
    """``bench.tasks``, imported once the environment is set (``@task`` reads the settings)."""
    return importlib.import_module("bench.tasks")


# -- the worker -----------------------------------------------------------------------------


def session_cpu_seconds(session: int) -> float:
    """User + system CPU of every live process of a session (a worker's main and pool)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # session id
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def orchestrator_worker_argv(*args: str) -> list[str]:
    """``celery -A orchestrator.worker worker`` with ``args`` (``-c 2`` unless told otherwise)."""
    from orchestrator.dev.server import worker_argv

    return worker_argv(f"bench-{os.getpid()}", *(args or ("-c", "2")), loglevel="WARNING")


class Worker:
    """A real worker subprocess in its own session: by default
    ``celery -A orchestrator.worker worker -c 2``, with this process's environment (which
    ``setup_services`` points at the bench services) plus ``extra_env``. ``probe`` is the task
    ``wait_ready`` calls (``bench.tasks.noop`` unless told)."""

    def __init__(
        self,
        log: Path,
        extra_env: dict[str, str] | None = None,
        argv: list[str] | None = None,
        probe: Any = None,
    ) -> None:
        self.log = log
        self.probe = probe
        env = {**os.environ, **(extra_env or {}), "PYTHONPATH": str(ROOT)}
        cmd = argv or orchestrator_worker_argv()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the worker has run one task."""
        from celery.exceptions import TimeoutError as ResultTimeout

        pending = (self.probe or tasks_module().noop).delay()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ResultTimeout):
                pending.get(timeout=1.0)
                return
        raise RuntimeError(f"worker did not start:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the worker's session (main and pool)."""
        return session_cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (warm shutdown) and wait; SIGKILL the group only if it does not exit."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@contextlib.contextmanager
def running_worker(
    log: Path,
    extra_env: dict[str, str] | None = None,
    argv: list[str] | None = None,
    probe: Any = None,
) -> Iterator[Worker]:
    worker = Worker(log, extra_env, argv, probe)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


# -- raw Celery canvas ----------------------------------------------------------------------


def raw_group(n: int, noop: Any = None) -> Any:
    from celery import group

    noop = noop or tasks_module().noop
    return group(noop.si() for _ in range(n))


def raw_chain(n: int, noop: Any = None) -> Any:
    from celery import chain

    noop = noop or tasks_module().noop
    return chain(noop.si(), *(noop.s() for _ in range(n - 1)))


def raw_chord(n: int, noop: Any = None) -> Any:
    from celery import chord, group

    noop = noop or tasks_module().noop
    return chord(group(noop.si() for _ in range(n)), noop.s())


def raw_ladder(stages: int, noop: Any = None) -> Any:
    """``chain(a, chord([b, c], d), a, chord([b, c], d), ...)`` written out (no auto-upgrade)."""
    from celery import chain, chord, group

    noop = noop or tasks_module().noop
    parts: list[Any] = []
    for _ in range(stages):
        parts += [noop.s(), chord(group(noop.s(), noop.s()), noop.s())]
    parts[0] = noop.si()
    return chain(*parts)


def _not_done(app: Any, ids: list[str]) -> list[str]:
    """The ids whose result is not stored yet (one MGET); raises if any of them failed."""
    from celery import states

    backend = app.backend
    metas = backend.client.mget([backend.get_key_for_task(i) for i in ids])
    pending = []
    for task_id, meta in zip(ids, metas, strict=True):
        status = json.loads(meta)["status"] if meta else states.PENDING
        if status in states.PROPAGATE_STATES:
            raise RuntimeError(f"raw task {task_id} ended {status}")
        if status != states.SUCCESS:
            pending.append(task_id)
    return pending


def wait_all(app: Any, ids: list[str]) -> None:
    """Wait on the last id's AsyncResult, then check the rest; repeat with what is left."""
    pending = list(ids)
    while pending:
        app.AsyncResult(pending[-1]).get(timeout=WAIT_TIMEOUT, interval=0.005)
        pending = _not_done(app, pending[:-1])


def run_raw(build: Callable[[], Any]) -> float:
    """Seconds to build and publish a raw canvas and have every final task's result."""
    started = time.perf_counter()
    result = build().apply_async()
    children = getattr(result, "results", None)  # a GroupResult has no single final task
    wait_all(result.app, [r.id for r in children] if children is not None else [result.id])
    return time.perf_counter() - started


# -- orchestrator workflows -----------------------------------------------------------------


def wf_group(n: int) -> Any:
    """``n`` root steps, no fan-in (the raw group's shape)."""
    from orchestrator import Workflow

    wf = Workflow(f"bench-group-{n}")
    for i in range(n):
        wf.step(f"s{i}", tasks_module().noop)
    return wf.spec


def wf_chain(n: int) -> Any:
    from orchestrator import Workflow

    wf = Workflow(f"bench-chain-{n}")
    for i in range(n):
        wf.step(f"s{i}", tasks_module().noop, after=f"s{i - 1}" if i else None)
    return wf.spec


def wf_chord(n: int) -> Any:
    """``n`` root steps and one step after all of them (fan-out, fan-in)."""
    from orchestrator import Workflow

    wf = Workflow(f"bench-chord-{n}")
    roots = [f"s{i}" for i in range(n)]
    for step in roots:
        wf.step(step, tasks_module().noop)
    wf.step("join", tasks_module().noop, after=roots)
    return wf.spec


def wf_ladder(stages: int) -> Any:
    """``a_i -> (b_i, c_i) -> d_i -> a_(i+1)``: the same edges as ``raw_ladder``."""
    from orchestrator import Workflow

    noop = tasks_module().noop
    wf = Workflow(f"bench-ladder-{stages}")
    for i in range(stages):
        wf.step(f"a{i}", noop, after=f"d{i - 1}" if i else None)
        wf.step(f"b{i}", noop, after=f"a{i}")
        wf.step(f"c{i}", noop, after=f"a{i}")
        wf.step(f"d{i}", noop, after=[f"b{i}", f"c{i}"])
    return wf.spec


def run_orch(spec: Any) -> float:
    """Seconds from ``run_workflow`` until ``wait()`` returns the run's output."""
    from orchestrator import run_workflow

    started = time.perf_counter()
    run_workflow(spec).wait(timeout=WAIT_TIMEOUT)
    return time.perf_counter() - started


# -- throughput scenarios -------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    tasks: int
    raw: Callable[[], Any]  # builds the raw canvas
    spec: Callable[[], Any]  # builds the workflow spec (once, outside the timing)


def scenarios() -> list[Scenario]:
    return [
        Scenario(
            "group 1000 (wf: 1000 roots)", 1000, lambda: raw_group(1000), lambda: wf_group(1000)
        ),
        Scenario("chain 100", 100, lambda: raw_chain(100), lambda: wf_chain(100)),
        Scenario("chord 1000->1", 1001, lambda: raw_chord(1000), lambda: wf_chord(1000)),
        Scenario("ladder 50 stages", 200, lambda: raw_ladder(50), lambda: wf_ladder(50)),
    ]


@dataclass(frozen=True)
class Sample:
    """One run: wall seconds, CPU seconds of the worker (all its processes) and of this client."""

    wall: float
    worker_cpu: float
    client_cpu: float


def sampled(worker: Worker, run: Callable[[], float]) -> Sample:
    worker_before, client_before = worker.cpu_seconds(), time.process_time()
    wall = run()
    return Sample(wall, worker.cpu_seconds() - worker_before, time.process_time() - client_before)


def _median(samples: list[Sample], field: str) -> float:
    return float(statistics.median(getattr(s, field) for s in samples))


@dataclass(frozen=True)
class Row:
    name: str
    tasks: int
    raw_runs: list[Sample]
    orch_runs: list[Sample]

    @property
    def raw(self) -> float:
        return _median(self.raw_runs, "wall")

    @property
    def orch(self) -> float:
        return _median(self.orch_runs, "wall")

    def cpu_ms(self, side: str, field: str) -> float:
        runs = self.raw_runs if side == "raw" else self.orch_runs
        return 1000 * _median(runs, field) / self.tasks

    def figures(self) -> dict[str, Any]:
        cpu = {
            f"{side}_{field}_ms_per_task": self.cpu_ms(side, field)
            for side in ("raw", "orch")
            for field in ("worker_cpu", "client_cpu")
        }
        return {
            "tasks": self.tasks,
            "raw_s": self.raw,
            "orch_s": self.orch,
            "raw_tasks_per_s": self.tasks / self.raw,
            "orch_tasks_per_s": self.tasks / self.orch,
            "ratio": self.orch / self.raw,
            "overhead_ms_per_task": 1000 * (self.orch - self.raw) / self.tasks,
            **cpu,
            "raw_runs": [asdict(r) for r in self.raw_runs],
            "orch_runs": [asdict(r) for r in self.orch_runs],
        }


def measure(scenario: Scenario, repeats: int, worker: Worker) -> Row:
    """One warm-up of each side, then ``repeats`` alternating raw/orchestrator runs."""
    spec = scenario.spec()
    run_raw(scenario.raw)
    run_orch(spec)
    raw_runs, orch_runs = [], []
    for _ in range(repeats):
        raw_runs.append(sampled(worker, lambda: run_raw(scenario.raw)))
        orch_runs.append(sampled(worker, lambda: run_orch(spec)))
    row = Row(scenario.name, scenario.tasks, raw_runs, orch_runs)
    print(f"  {row.name}: raw {row.raw:.3f}s, orchestrator {row.orch:.3f}s", flush=True)
    return row


# -- latency --------------------------------------------------------------------------------


def raw_latency() -> float:
    started = time.perf_counter()
    raw_chain(3).apply_async().get(timeout=WAIT_TIMEOUT, interval=0.005)
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    ms = sorted(1000 * s for s in samples)
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18]
    return {"p50_ms": statistics.median(ms), "p95_ms": p95, "runs": len(ms)}


def measure_latency(runs: int) -> dict[str, Any]:
    """A 3-step chain, submit to result: ``runs`` alternating raw/orchestrator samples."""
    spec = wf_chain(3)
    for _ in range(3):  # warm-up
        raw_latency()
        run_orch(spec)
    raw, orch = [], []
    for _ in range(runs):
        raw.append(raw_latency())
        orch.append(run_orch(spec))
    figures = {"raw": percentiles(raw), "orch": percentiles(orch)}
    print(
        f"  latency: raw p50 {figures['raw']['p50_ms']:.1f} ms, "
        f"orchestrator p50 {figures['orch']['p50_ms']:.1f} ms",
        flush=True,
    )
    return figures


# -- message sizes --------------------------------------------------------------------------


def logged_messages(run: Callable[[], Any]) -> dict[str, Any]:
    """The largest message ``run`` publishes (client and worker), and how many there were."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    key = tasks_module().PUBLISHED_KEY
    client.delete(key)
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - a raw canvas may fail to publish; report it
        return {"largest_bytes": None, "messages": None, "error": f"{type(exc).__name__}: {exc}"}
    sizes = [json.loads(item)[1] for item in client.lrange(key, 0, -1)]
    return {"largest_bytes": max(sizes), "messages": len(sizes)}


def measure_sizes(stages: int) -> dict[str, Any]:
    spec = wf_ladder(stages)
    raw = logged_messages(lambda: run_raw(lambda: raw_ladder(stages)))
    orch = logged_messages(lambda: run_orch(spec))
    print(
        f"  ladder {stages} stages: largest message raw {raw['largest_bytes']} B, "
        f"orchestrator {orch['largest_bytes']} B",
        flush=True,
    )
    return {"steps": 4 * stages, "raw": raw, "orch": orch}


# -- the report -----------------------------------------------------------------------------


def throughput_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    head = (
        f"{'scenario':<28}{'tasks':>6}{'raw s':>9}{'orch s':>9}{'raw t/s':>9}"
        f"{'orch t/s':>9}{'orch/raw':>9}{'+ms/task':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, f in rows.items():
        lines.append(
            f"{name:<28}{f['tasks']:>6}{f['raw_s']:>9.3f}{f['orch_s']:>9.3f}"
            f"{f['raw_tasks_per_s']:>9.0f}{f['orch_tasks_per_s']:>9.0f}{f['ratio']:>9.2f}"
            f"{f['overhead_ms_per_task']:>9.2f}"
        )
    return lines


def cpu_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    head = (
        f"{'CPU ms per task (median)':<28}{'wrk raw':>9}{'wrk orch':>9}{'orch/raw':>9}"
        f"{'cli raw':>9}{'cli orch':>9}"
    )
    lines = [head, "-" * len(head)]
    for name, f in rows.items():
        raw, orch = f["raw_worker_cpu_ms_per_task"], f["orch_worker_cpu_ms_per_task"]
        lines.append(
            f"{name:<28}{raw:>9.2f}{orch:>9.2f}{orch / raw:>9.2f}"
            f"{f['raw_client_cpu_ms_per_task']:>9.2f}{f['orch_client_cpu_ms_per_task']:>9.2f}"
        )
    return lines


def latency_table(lat: dict[str, Any]) -> list[str]:
    raw, orch = lat["raw"], lat["orch"]
    return [
        f"{'latency, 3-step chain':<28}{'raw':>9}{'orch':>9}{'orch/raw':>9}",
        *(
            f"{label:<28}{raw[k]:>9.1f}{orch[k]:>9.1f}{orch[k] / raw[k]:>9.2f}"
            for label, k in (("p50 ms", "p50_ms"), ("p95 ms", "p95_ms"))
        ),
    ]


def _size(entry: dict[str, Any]) -> str:
    return str(entry["largest_bytes"]) if entry["largest_bytes"] is not None else "error"


def size_table(sizes: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"{'largest broker message':<28}{'raw B':>9}{'orch B':>9}{'orch/raw':>9}"]
    for name, s in sizes.items():
        raw, orch = s["raw"]["largest_bytes"], s["orch"]["largest_bytes"]
        ratio = f"{orch / raw:>9.3f}" if raw and orch else f"{'-':>9}"
        lines.append(f"{name:<28}{_size(s['raw']):>9}{_size(s['orch']):>9}{ratio}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    meta = report["meta"]
    title = (
        f"orchestrator vs raw Celery {meta['celery']} (prefork -c 2, Redis), "
        f"median of {meta['repeats']}, {meta['cpus']} CPUs"
    )
    lines = [
        title,
        "",
        *throughput_table(report["throughput"]),
        "",
        *cpu_table(report["throughput"]),
        "",
        *latency_table(report["latency"]),
        "",
        *size_table(report["message_sizes"]),
    ]
    errors = [
        f"{n} {side}: {s[side]['error']}"
        for n, s in report["message_sizes"].items()
        for side in ("raw", "orch")
        if "error" in s[side]
    ]
    load = "load average before/after: {} / {}".format(*meta["load_average"])
    return "\n".join([*lines, "", load, *(f"error: {e}" for e in errors)])


def save(output: Path, figures: dict[str, Any]) -> None:
    """Merge ``figures``' keys into the JSON file ``output``; the other benches' keys stay."""
    try:
        existing = json.loads(output.read_text())
    except (OSError, ValueError):
        existing = {}
    output.write_text(json.dumps({**existing, **figures}, indent=2) + "\n")


# -- main -----------------------------------------------------------------------------------


def _meta(quick: bool, repeats: int) -> dict[str, Any]:
    import celery

    return {
        "quick": quick,
        "repeats": repeats,
        "celery": celery.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "worker": "prefork -c 2",
        "broker": "redis",
        "backend": "redis",
    }


def _sizes(logs: Path) -> dict[str, Any]:
    """Message sizes, with a worker (and this process) logging every publish."""
    log_env = {tasks_module().PUBLISH_LOG_ENV: REDIS_URL}
    os.environ.update(log_env)
    try:
        with running_worker(logs / "worker-sizes.log", log_env):
            return {f"ladder {n} stages ({4 * n} steps)": measure_sizes(n) for n in (50, 125)}
    finally:
        os.environ.pop(tasks_module().PUBLISH_LOG_ENV, None)


def run_benchmarks(quick: bool, logs: Path) -> dict[str, Any]:
    """Every measurement, with the workers it needs; the figures as one JSON-able dict."""
    repeats = 1 if quick else 3
    report: dict[str, Any] = {"meta": _meta(quick, repeats)}
    load_before = os.getloadavg()[0]
    with running_worker(logs / "worker.log") as worker:
        print("throughput:", flush=True)
        report["throughput"] = {s.name: measure(s, repeats, worker).figures() for s in scenarios()}
        report["latency"] = measure_latency(10 if quick else 50)
    print("message sizes:", flush=True)
    report["message_sizes"] = _sizes(logs)
    report["meta"]["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per figure, not 3")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)
    setup_services()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-canvas-") as logs:
            report = run_benchmarks(args.quick, Path(logs))
    finally:
        teardown_services()
    print()
    print(format_report(report))
    save(args.output, report)
    print(f"\nfigures written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
