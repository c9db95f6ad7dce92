"""Where a step's time goes: cProfile of the worker and the client, Redis commands and SQL
statements per step, for the orchestrator and both raw Celery baselines (issue 14).

Run ``python bench/bench_profile.py`` from the project root (PostgreSQL on 127.0.0.1, and
``redis-server`` on the PATH). It starts a private Redis (a free port on 127.0.0.1, nothing
saved) so that ``INFO commandstats`` counts only this benchmark's commands, a database of its own
(``orchestrator_bench_profile``), and two workers with ``--pool solo`` (every task in the
worker's main process, so one cProfile sees the consumer, the tracer and the task): the
orchestrator's worker (serving ``orch`` and ``reliable``, see ``bench_baselines.py``) and the
plain Celery worker (``bench/plain_app.py``, Celery's defaults). ``BENCH_PROFILE=1`` arms the
``profile_start``/``profile_stop`` tasks and SQL counting in the workers (``bench/profiling.py``).

For each shape (``chain 100``, ``chord 1000->1``, and 20 3-step chains one after the other
for the per-run costs of the latency figure) and side, after one warm-up run: the
worker's profiler is switched on, Redis's command stats reset, the client's profiler switched
on, the shape run once, then both profilers are stopped. Reported per step (divided by the
shape's task count): wall time, Redis commands (all processes, by command), Redis round trips
of the client and of the worker (calls of redis-py's ``send_packed_command``: a pipeline is one),
SQL statements by kind and commits (client and worker, SQLAlchemy events), and the top functions
by own time and the orchestrator's functions by cumulative time, in the worker and in the
client; the own time of builtins that block (poll, recv, sleep, lock waits) is counted apart as
``blocked``. Only the thread that runs tasks is profiled: the worker's history-writer thread
(its SQL) is not, so its CPU shows only in ``bench_baselines.py``'s /proc figures. cProfile slows
Python roughly 2x, so its times are for ranking, not for the wall-time table
(``bench_baselines.py``).

Last, without profiling, 20 3-step runs are timed in parts (``timeline``): submit, until the
first step starts, the steps, and from the run's end (as the worker stamps it) until ``wait()``
returns. The figures are merged into ``bench/results.json`` under ``"profile"``; the ``.prof``
files stay in the directory printed at the end (open them with ``python -m pstats``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench import bench_baselines as bb  # noqa: E402
from bench import bench_canvas as bc  # noqa: E402
from bench import profiling  # noqa: E402

DB_NAME = "orchestrator_bench_profile"
SIDES = ("plain", "reliable", "orch")
TOP = 25
ROUND_TRIP = "send_packed_command"  # redis-py: one call per command or per pipeline sent
BLOCKING = ("'poll'", "'epoll'", "'recv'", "time.sleep", "'acquire'", "select.select", "'wait'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port; yields its URL (db 11)."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/11"
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


# -- one profiled run -----------------------------------------------------------------------


def control(side: str) -> tuple[Any, Any]:
    """The ``profile_start`` and ``profile_stop`` tasks of the worker serving ``side``."""
    module = bb.plain_app() if side == "plain" else bc.tasks_module()
    return module.profile_start, module.profile_stop


def profiled_run(side: str, run: Callable[[], float], url: str, out: Path) -> dict[str, Any]:
    """Run once with both profilers on; wall time, Redis command stats, SQL counts."""
    import redis

    start, stop = control(side)
    start.delay().get(timeout=30)
    client = redis.Redis.from_url(url)
    client.config_resetstat()
    profiling.start()
    wall = run()
    client_sql = profiling.stop(str(out / "client.prof"))
    commands = {
        name.removeprefix("cmdstat_"): int(stat["calls"])
        for name, stat in client.info("commandstats").items()
    }
    stop.delay(str(out / "worker.prof")).get(timeout=60)
    worker_sql = Path(f"{out / 'worker.prof'}.sql.json").read_text()
    return {
        "wall_s": wall,
        "redis_commands": commands,
        "sql_client": client_sql,
        "sql_worker": json.loads(worker_sql),
    }


# -- reading the profiles -------------------------------------------------------------------


def _label(func: tuple[str, int, str]) -> str:
    path, line, name = func
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({name})" if line else name


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/orchestrator/" in path:
        return "orchestrator." + path.split("/orchestrator/", 1)[1].split("/", 1)[0]
    return "stdlib/builtin" if path.startswith(("/", "~", "<")) or not path else path


def blocking(func: tuple[str, int, str]) -> bool:
    """A builtin that waits (for a socket, a timer, a lock) rather than computes."""
    return func[0] == "~" and any(name in func[2] for name in BLOCKING)


def summarize(prof: Path, steps: int) -> dict[str, Any]:
    """Top functions (cumulative and own time, ms per step), own time by package, round trips.
    Own time of the builtins that block (``BLOCKING``) is reported apart, as ``blocked``."""
    stats = pstats.Stats(str(prof))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    everything = [(func, nc, tt, ct) for func, (_cc, nc, tt, ct, _callers) in table.items()]
    rows = [r for r in everything if not blocking(r[0])]
    total = sum(tt for _f, _nc, tt, _ct in rows)
    blocked = sum(tt for f, _nc, tt, _ct in everything if blocking(f))

    def top(key: int, only: str = "") -> list[dict[str, Any]]:
        chosen = [r for r in rows if only in r[0][0]]
        ranked = sorted(chosen, key=lambda r: r[key], reverse=True)[:TOP]
        return [
            {
                "function": _label(f),
                "calls_per_step": nc / steps,
                "own_ms_per_step": 1000 * tt / steps,
                "cum_ms_per_step": 1000 * ct / steps,
            }
            for f, nc, tt, ct in ranked
        ]

    by_package: Counter[str] = Counter()
    for func, _nc, tt, _ct in rows:
        by_package[_package(func[0])] += tt
    round_trips = sum(nc for f, nc, _tt, _ct in everything if f[2] == ROUND_TRIP)
    return {
        "profiled_cpu_ms_per_step": 1000 * total / steps,
        "blocked_ms_per_step": 1000 * blocked / steps,
        "redis_round_trips_per_step": round_trips / steps,
        "own_ms_per_step_by_package": {
            k: round(1000 * v / steps, 4) for k, v in by_package.most_common(12)
        },
        "top_cumulative": top(3),
        "top_cumulative_orchestrator": top(3, "/orchestrator/"),
        "top_own": top(2),
    }


def per_step(counts: dict[str, int], steps: int) -> dict[str, float]:
    ranked = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
    return {"total": sum(counts.values()) / steps, **{k: v / steps for k, v in ranked}}


# -- the report -----------------------------------------------------------------------------


def top_lines(rows: list[dict[str, Any]], title: str) -> list[str]:
    head = f"   {'cum ms':>8}{'own ms':>8}{'calls':>7}  (per step) {title}"
    return [
        head,
        *(
            f"   {r['cum_ms_per_step']:>8.3f}{r['own_ms_per_step']:>8.3f}"
            f"{r['calls_per_step']:>7.2f}  {r['function']}"
            for r in rows
        ),
    ]


def format_entry(shape: str, side: str, entry: dict[str, Any]) -> list[str]:
    redis_cmds = entry["redis_commands_per_step"]
    lines = [
        f"== {shape}, {side}: wall {entry['wall_s']:.3f}s under cProfile",
        f"Redis commands/step {redis_cmds['total']:.2f}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in list(redis_cmds.items())[1:] if v >= 0.005),
        f"Redis round trips/step: worker {entry['worker']['redis_round_trips_per_step']:.2f}, "
        f"client {entry['client']['redis_round_trips_per_step']:.2f}",
    ]
    for who in ("worker", "client"):
        sql = entry[f"sql_{who}_per_step"]
        if sql["total"]:
            lines.append(
                f"SQL/step {who} {sql['total']:.2f}: "
                + ", ".join(f"{k} {v:.2f}" for k, v in list(sql.items())[1:] if v >= 0.005)
            )
    for who in ("worker", "client"):
        s = entry[who]
        packages = ", ".join(f"{k} {v:.3f}" for k, v in s["own_ms_per_step_by_package"].items())
        lines += [
            f"-- {who}: profiled {s['profiled_cpu_ms_per_step']:.3f} ms/step busy, "
            f"{s['blocked_ms_per_step']:.3f} blocked; own ms/step by package: {packages}",
            *top_lines(s["top_own"][:15], "top by own time"),
            *top_lines(s["top_cumulative_orchestrator"][:15], "orchestrator's, by cumulative"),
        ]
    return lines


def profile_shape(shape: bb.Shape, url: str, out: Path) -> dict[str, Any]:
    latency = shape.name.startswith("3-step")
    run = latency_runners(bc.wf_chain(3)) if latency else bb.runners(shape, shape.spec())
    results = {}
    for side in SIDES:
        run[side]()  # warm-up
        side_dir = out / f"{shape.name.split()[0]}-{side}"
        side_dir.mkdir()
        raw = profiled_run(side, run[side], url, side_dir)
        steps = shape.tasks
        results[side] = {
            "wall_s": raw["wall_s"],
            "redis_commands_per_step": per_step(raw["redis_commands"], steps),
            "sql_worker_per_step": per_step(raw["sql_worker"], steps),
            "sql_client_per_step": per_step(raw["sql_client"], steps),
            "worker": summarize(side_dir / "worker.prof", steps),
            "client": summarize(side_dir / "client.prof", steps),
        }
        print("\n".join(format_entry(shape.name, side, results[side])), flush=True)
    return results


LATENCY_RUNS = 20


def latency_shape() -> bb.Shape:
    """``LATENCY_RUNS`` 3-step chains one after the other, submit to result (per-run costs)."""
    return bb.Shape(f"3-step x{LATENCY_RUNS}", 3 * LATENCY_RUNS, lambda t: None, lambda: None)


def latency_runners(spec: Any) -> dict[str, Callable[[], float]]:
    def runs(side: str) -> Callable[[], float]:
        return lambda: sum(bb.latency_once(side, spec) for _ in range(LATENCY_RUNS))

    return {side: runs(side) for side in SIDES}


def run_profiles(url: str, logs: Path, out: Path) -> dict[str, Any]:
    env = {profiling.PROFILE_ENV: "1"}
    profiling.count_sql()
    by_name = {s.name: s for s in bb.shapes()}
    with (
        bc.running_worker(
            logs / "orch.log", env, argv=bc.orchestrator_worker_argv("--pool", "solo")
        ),
        bc.running_worker(
            logs / "plain.log",
            env,
            argv=bb.plain_worker_argv("--pool", "solo"),
            probe=bb.plain_app().noop,
        ),
    ):
        chosen = [by_name["chain 100"], by_name["chord 1000->1"], latency_shape()]
        report = {shape.name: profile_shape(shape, url, out) for shape in chosen}
        report["3-step timeline"] = bb.timeline(LATENCY_RUNS)
        print(
            "3-step run, medians (ms): "
            + ", ".join(f"{k} {v:.1f}" for k, v in report["3-step timeline"].items())
        )
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=bc.RESULTS_PATH, help="JSON results file")
    args = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    print(bb.load_average(), flush=True)
    with private_redis() as url:
        os.environ[bb.PLAIN_ENV] = url
        bc.setup_services(url, DB_NAME)
        try:
            report = run_profiles(url, out, out)
        finally:
            bc.teardown_services(url, DB_NAME)
    print(bb.load_average())
    bc.save(args.output, {"profile": report})
    print(f"\nfigures merged into {args.output} (key 'profile'); profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
