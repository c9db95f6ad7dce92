"""A worker main process's threads at work while it forks pool-like children (test_fork_safety).

Prints one JSON line: the modules the threads imported after ``forksafe.prepare`` and the exit
codes of the children. Arguments: a run id and its workflow version (a run published to a queue
no worker consumes, which the thread recovers again and again). With ``--no-prepare`` it skips
the warm-up (what main did before).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import orchestrator.worker as worker_module
from orchestrator.engine.services import PlanKey
from orchestrator.ops import forksafe
from orchestrator.ops.delays import DelayPump
from orchestrator.ops.reconciler import Reconciler
from orchestrator.ops.recovery import recover_run

rt = worker_module.services
if "--no-prepare" not in sys.argv:
    forksafe.prepare(rt)
main = threading.main_thread()
imported: list[str] = []
stop = threading.Event()


def audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "import" and threading.current_thread() is not main:
        imported.append(str(args[0]))


def work(run_id: str) -> None:
    """What the reconciler, the delay pump and the history writer do in a worker."""
    reconciler, pump = (
        Reconciler(rt),
        DelayPump(rt.delays, lambda m: rt.app.signature(m).apply_async()),
    )
    while not stop.is_set():
        reconciler.pass_once()
        pump.pump_once()
        rt.state.client.delete(f"orch:{{{run_id}}}:recovering")
        recover_run(rt, run_id, "fork test")
        rt.writer.flush(timeout=5)


def child(version: str) -> None:
    """A pool process: a fresh runtime that loads a plan from PostgreSQL."""
    signal.alarm(20)  # a child stuck on a lock it inherited is killed: exit code -14
    rt.after_fork()
    rt.plan(PlanKey(version))
    os._exit(0)


run_id, version = sys.argv[1], sys.argv[2]  # a run published to a queue nobody consumes
sys.addaudithook(audit)
thread = threading.Thread(target=work, args=(run_id,), daemon=True)
thread.start()
codes = []
for _ in range(int(os.environ.get("FORKS", "20"))):
    time.sleep(0.05)
    pid = os.fork()
    if pid == 0:
        child(version)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
stop.set()
thread.join(30)
print(json.dumps({"imported": sorted(set(imported)), "codes": codes}))
