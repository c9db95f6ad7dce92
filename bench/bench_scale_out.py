"""Scale-out across "hosts": workers in network namespaces of their own, one Redis and one
PostgreSQL on a shared address; throughput with 1, 2 and 3 hosts, then one host killed mid-batch.

Run as root from the project root:
``.venv/bin/python bench/bench_scale_out.py [--runs 200] [--repeat 3]``. It builds the network of
``bench/netns.py`` (bridge ``orchbr0`` at 10.77.0.1, host ``i`` in the network namespace
``orch-bench-h<i>`` at 10.77.0.<10+i>, with host name ``host<i>`` and a pid namespace of its own),
starts a Redis and a PostgreSQL of its own bound to 10.77.0.1 (``bench/bridge_servers.py``), and
in each host one ``celery -A orchestrator.worker worker -c 2 -n bench@%h`` importing
``bench.tasks``. This client runs outside the namespaces and reaches the servers at the same
address as the workers.

1. Throughput: with 1, then 2, then 3 hosts (each phase adds a host), ``--repeat`` batches (the
   median is shown) of ``--runs`` runs of a 10-step fan (``a -> b1..b8 -> z``, every step
   ``bench.tasks.noop``), submitted at once, from the first submit until the last run's end is
   known; runs/s and steps/s. Every run is then checked: succeeded, output ``None`` (``z``'s),
   10 steps succeeded; and which host ran each step (``attempt_log[].worker``).
2. Kill: with 3 hosts, the same batch; once a quarter of it has ended, SIGKILL to host2's worker
   process group (main process and pool: no warm shutdown, leases not released, messages left
   unacknowledged). The other hosts' reconcilers recover host2's runs once their leases lapse.
   Reported: runs ended and succeeded (N/N), runs recovered (``RunRecord.recoveries``), time from
   the kill to the last run's end.

Workers run with ``ORCHESTRATOR_LEASE_SECONDS=5``, ``ORCHESTRATOR_RECONCILE_INTERVAL=1`` and
``ORCHESTRATOR_STALL_TIMEOUT=30`` (defaults 30, 5 and 300) so that recovery takes seconds, not
minutes; recovery time is set by them (the report names the reconciler's reason for each run).

Single-host checks printed on the way: ``orchestrator workers`` run inside host1 (it lists every
host's worker by ``name@host``, and host2 ``lost`` after the kill), and the holders of live step
leases (``host:pid:token``) sampled from Redis.

On a 2-core machine the hosts share the same two CPUs: more hosts add processes, not CPU, so
steps/s cannot grow with hosts here (it falls: more processes contend for the same cores); what
the table shows is that every run is correct when work is spread over hosts and one of them dies.
Everything (workers, servers, namespaces, veths, bridge, data; the worker logs are kept) is
removed at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``bench`` and ``orchestrator`` importable
    sys.path.insert(0, str(ROOT))

from bench.bridge_servers import BridgeServers  # noqa: E402  (after the path is set)
from bench.netns import PREFIX, SERVER_ADDRESS, Network  # noqa: E402

HOSTS = 3
KILLED = 2
FAN = 8  # a -> b1..b8 -> z: 10 steps
WAIT_TIMEOUT = 600.0
STALL_TIMEOUT = 30
TUNING = {
    "ORCHESTRATOR_LEASE_SECONDS": "5",
    "ORCHESTRATOR_RECONCILE_INTERVAL": "1",
    "ORCHESTRATOR_STALL_TIMEOUT": str(STALL_TIMEOUT),
}


class HostWorker:
    """One host's ``celery worker -c 2`` (its own session: SIGKILL to the group kills it all)."""

    def __init__(self, net: Network, host: int, env: dict[str, str], logs: Path) -> None:
        from orchestrator.dev.server import worker_argv

        self.host = host
        self.name = f"bench@{net.hostname(host)}"
        cmd = net.argv(host, worker_argv("bench", "-c", "2", loglevel="WARNING"))
        self.log = logs / f"worker-host{host}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):  # pool children that outlived their parent
            os.killpg(self.proc.pid, signal.SIGKILL)


def await_workers(workers: list[HostWorker], timeout: float = 90.0) -> None:
    """Until each worker's heartbeat is in Redis (it consumes by then)."""
    from orchestrator.client import workers as list_workers

    wanted = {w.name for w in workers}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {w.name for w in list_workers() if not w.lost}
        if wanted <= live:
            return
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"{w.name} exited:\n{w.log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"workers {sorted(wanted)} not live after {timeout:g}s")


def fan_spec() -> Any:
    from bench.tasks import noop
    from orchestrator import Workflow

    wf = Workflow("bench-scale-out").step("a", noop)
    fan = [f"b{i}" for i in range(1, FAN + 1)]
    for step in fan:
        wf = wf.step(step, noop, after="a")
    return wf.step("z", noop, after=fan).spec


def submit(spec: Any, runs: int) -> list[Any]:
    from orchestrator import run_workflow

    return [run_workflow(spec) for _ in range(runs)]


def wait_all(handles: list[Any]) -> None:
    for handle in handles:
        handle.wait(timeout=WAIT_TIMEOUT)


def check(handles: list[Any]) -> tuple[int, dict[str, int], dict[str, int]]:
    """(runs correct, steps run per worker, runs recovered per reason); raises on a wrong run."""
    from orchestrator import RunStatus, StepStatus

    per_worker: dict[str, int] = {}
    recovered: dict[str, int] = {}
    for handle in handles:
        record = handle.record()
        steps = handle.steps()
        ok = record.status == RunStatus.SUCCEEDED and record.output is None
        if not ok or len(steps) != FAN + 2:
            raise RuntimeError(f"run {handle.id}: {record.status} output={record.output!r}")
        if any(s.status != StepStatus.SUCCEEDED for s in steps):
            raise RuntimeError(f"run {handle.id}: a step did not succeed: {steps}")
        for step in steps:
            done = [a for a in step.attempt_log if a.status == StepStatus.SUCCEEDED]
            worker = (done[-1].worker if done else None) or "unrecorded"
            per_worker[str(worker)] = per_worker.get(str(worker), 0) + 1
        for _, kind, detail in handle.events() if record.recoveries else ():
            if kind == "recovered":
                reason = str(detail).partition(": ")[2]
                recovered[reason] = recovered.get(reason, 0) + 1
    return len(handles), per_worker, recovered


def recovery_detail(handles: list[Any]) -> list[str]:
    """For each recovered run: the steps history held as done when it was recovered, and each
    step that ran more than once or has no worker on record (what the kill cost)."""
    lines = []
    for handle in handles:
        record = handle.record()
        if not record.recoveries:
            continue
        done = [len(steps) for steps in record.recoveries]
        lines.append(f"run {handle.id[:8]}: steps done in history at each recovery: {done}")
        for step in handle.steps():
            tries = [(a.attempt, str(a.status), a.worker) for a in step.attempt_log]
            if len(tries) != 1 or tries[0][2] is None:
                lines.append(f"  step {step.step_id}: attempts {tries}")
    return lines


def workers_listing(net: Network, env: dict[str, str]) -> str:
    """``orchestrator workers`` as host1 sees it."""
    cmd = net.argv(1, [sys.executable, "-m", "orchestrator.cli", "workers"])
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    return (done.stdout + done.stderr).strip()


def lease_holders(redis_url: str, most: int = 6, within: float = 3.0) -> list[str]:
    """Holders of live step leases, sampled until some are found (a no-op step holds its
    lease for a millisecond or so) or ``within`` seconds pass."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    found: set[str] = set()
    deadline = time.monotonic() + within
    while len(found) < most and time.monotonic() < deadline:
        for key in client.scan_iter("orch:*:lease:*", count=1000):
            value = client.get(key)
            if value:
                found.add(str(value))
    client.close()
    return sorted(found)[:most]


def throughput(spec: Any, runs: int, hosts: int, repeat: int) -> dict[str, Any]:
    """The median wall time of ``repeat`` batches; every run of every batch checked."""
    wait_all(submit(spec, 5))  # warm-up: every new worker's first steps
    walls: list[float] = []
    correct, per_worker = 0, dict[str, int]()
    for _ in range(repeat):
        started = time.perf_counter()
        handles = submit(spec, runs)
        wait_all(handles)
        walls.append(time.perf_counter() - started)
        ok, per_worker, _ = check(handles)
        correct += ok
    wall = statistics.median(walls)
    return {"hosts": hosts, "wall": wall, "correct": correct, "per_worker": per_worker}


def kill_phase(
    spec: Any, runs: int, victim: HostWorker, net: Network, env: dict[str, str], redis_url: str
) -> dict[str, Any]:
    handles = submit(spec, runs)
    for handle in handles[: runs // 4]:
        handle.wait(timeout=WAIT_TIMEOUT)
    holders = lease_holders(redis_url)
    print("step lease holders sampled just before the kill (host:pid:token):")
    print("  " + "\n  ".join(holders or ["(none live at that instant)"]))
    killed_at, killed_wall = time.perf_counter(), time.time()
    victim.kill()
    wait_all(handles)
    recover = time.perf_counter() - killed_at
    correct, per_worker, recovered = check(handles)
    records = [h.record() for h in handles]
    ends = [r.finished_at.timestamp() - killed_wall for r in records if r.recoveries]
    listing = workers_listing(net, env)
    return {
        "detail": recovery_detail(handles),
        "correct": correct,
        "recovered": recovered,
        "recover": recover,
        "recovered_last": max(ends, default=0.0),
        "workers": listing,
        "per_worker": per_worker,
    }


def print_report(rows: list[dict[str, Any]], kill: dict[str, Any], runs: int, repeat: int) -> None:
    steps = runs * (FAN + 2)
    print(f"\nscale-out: {runs} runs x {FAN + 2} steps (a -> b1..b{FAN} -> z), noop steps,")
    print(f"one `celery worker -c 2` per host, {os.cpu_count()} CPUs shared by every host\n")
    print(f"median of {repeat} batches; steps per host: of the last batch\n")
    print("| hosts | wall s | runs/s | steps/s | runs correct | steps per host |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        share = ", ".join(f"{k.split('@')[-1]}: {v}" for k, v in sorted(row["per_worker"].items()))
        print(
            f"| {row['hosts']} | {row['wall']:.1f} | {runs / row['wall']:.1f} | "
            f"{steps / row['wall']:.0f} | {row['correct']}/{runs * repeat} | {share} |"
        )
    share = ", ".join(f"{k.split('@')[-1]}: {v}" for k, v in sorted(kill["per_worker"].items()))
    reasons = "; ".join(f"{n} x {why!r}" for why, n in kill["recovered"].items()) or "none"
    print(
        f"\nkill: host{KILLED}'s worker SIGKILLed after {runs // 4} of {runs} runs ended (3 hosts)"
        f"\n  runs ended {kill['correct']}/{runs}, every one succeeded with the right output"
        f"\n  recovered by the reconciler: {reasons}"
        f"\n  last recovered run ended {kill['recovered_last']:.1f}s after the kill, the batch"
        f" {kill['recover']:.1f}s after it (lease 5 s, reconcile every 1 s, stall timeout"
        f" {STALL_TIMEOUT} s)\n  steps per host: {share}"
    )
    print("  " + "\n  ".join(kill["detail"]))
    print(f"\n`orchestrator workers` run in host1 after the kill:\n{kill['workers']}")
    if (os.cpu_count() or 1) <= HOSTS:
        print(
            f"\nnote: {os.cpu_count()} CPUs for {HOSTS} hosts x 3 worker processes: the hosts share"
            " the same cores, so steps/s cannot rise with hosts on this machine; the figures show"
            " that the work spreads and stays correct, not CPU scaling."
        )


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds through the cleanup below


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per batch")
    parser.add_argument("--repeat", type=int, default=3, help="batches per host count (median)")
    args = parser.parse_args(argv)
    runs, repeat = args.runs, args.repeat
    if os.geteuid() != 0:
        print("run as root: network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN")
        return 2
    signal.signal(signal.SIGTERM, _terminated)
    net = Network(HOSTS)
    servers: BridgeServers | None = None
    workers: list[HostWorker] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-out-logs-"))
    try:
        net.create()
        servers = BridgeServers(SERVER_ADDRESS, f"{PREFIX}.0/24")
        servers.start()
        env = {**os.environ, **servers.env(), **TUNING, "PYTHONPATH": str(ROOT)}
        env |= {"ORCHESTRATOR_TASK_MODULES": "bench.tasks"}
        os.environ.update(env)
        from orchestrator.settings import get_settings
        from orchestrator.stores.postgres.migrate import upgrade

        get_settings.cache_clear()
        upgrade(get_settings().sqlalchemy_url)
        spec = fan_spec()
        rows = []
        for host in range(1, HOSTS + 1):
            workers.append(HostWorker(net, host, env, logs))
            await_workers(workers)
            rows.append(throughput(spec, runs, host, repeat))
            print(f"{host} host(s): {runs / rows[-1]['wall']:.1f} runs/s", flush=True)
        print(f"\n`orchestrator workers` run in host1 with {HOSTS} hosts:")
        print(workers_listing(net, env))
        kill = kill_phase(spec, runs, workers[KILLED - 1], net, env, servers.redis_url)
        print_report(rows, kill, runs, repeat)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        for worker in workers:
            worker.stop()
        from orchestrator.app import reset_default_app

        reset_default_app()  # close this process's connections before the servers go
        if servers is not None:
            servers.stop()
        net.destroy()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(f"\nworker logs (kept): {logs}")


if __name__ == "__main__":
    raise SystemExit(main())
