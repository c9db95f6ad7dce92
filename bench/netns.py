"""Several "hosts" on one Linux machine: network namespaces on a bridge, each with its own address
and host name, for ``bench/bench_scale_out.py``.

The machine side is the bridge ``orchbr0`` at ``10.77.0.1/24`` (where the bench's Redis and
PostgreSQL listen); host ``i`` is the namespace ``orch-bench-h<i>`` joined to the bridge by a veth
pair, with ``eth0`` at ``10.77.0.<10+i>`` and a default route through the bridge. A command runs
there with :meth:`Network.argv`: ``ip netns exec`` (its own network stack) and ``unshare --uts
--pid --fork --mount-proc`` (its own host name, ``host<i>``, so ``socket.gethostname()`` and
Celery's ``%h`` say it, and its own process ids: the worker is pid 1 there, as in a container, so
pids collide between hosts as they do between machines, and ``os.kill(pid, 0)`` sees only its own
host's processes). The file system stays shared with the machine (the hosts run the same code
from the same checkout, as machines deployed from one image do).

Needs root (``CAP_NET_ADMIN``, ``CAP_SYS_ADMIN``), ``iproute2`` and util-linux's ``unshare``.
:meth:`Network.destroy` removes every namespace, veth and the bridge, also those a killed earlier
run left (found by name), so nothing outlives the bench.
"""

from __future__ import annotations

import subprocess

BRIDGE = "orchbr0"
PREFIX = "10.77.0"
SERVER_ADDRESS = f"{PREFIX}.1"
NAMESPACE = "orch-bench-h"
VETH = "orchv"


def _ip(*args: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _existing_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NAMESPACE)]


class Network:
    """The bridge and ``count`` host namespaces; :meth:`destroy` undoes :meth:`create`."""

    def __init__(self, count: int) -> None:
        self.count = count

    @staticmethod
    def namespace(host: int) -> str:
        return f"{NAMESPACE}{host}"

    @staticmethod
    def hostname(host: int) -> str:
        return f"host{host}"

    @staticmethod
    def address(host: int) -> str:
        return f"{PREFIX}.{10 + host}"

    def create(self) -> None:
        """The bridge at :data:`SERVER_ADDRESS`, then each host's namespace, veth and address."""
        self.destroy()  # whatever a killed earlier run left
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{SERVER_ADDRESS}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for host in range(1, self.count + 1):
            ns, outside, inside = self.namespace(host), f"{VETH}{host}", f"{VETH}{host}p"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", outside, "master", BRIDGE, "up")
            _ip("link", "set", inside, "netns", ns)
            run = ("netns", "exec", ns, "ip")
            _ip(*run, "link", "set", inside, "name", "eth0")
            _ip(*run, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip(*run, "link", "set", "eth0", "up")
            _ip(*run, "link", "set", "lo", "up")
            _ip(*run, "route", "add", "default", "via", SERVER_ADDRESS)

    def argv(self, host: int, command: list[str]) -> list[str]:
        """``command`` run in host ``host``'s namespaces under its own host name, as pid 1 of its
        pid namespace. The process started is ``unshare`` (it waits for ``command``); both are
        in its process group, and SIGKILL to ``command`` (pid 1) ends every process of the
        host."""
        rename = 'hostname "$0" && exec "$@"'
        isolate = ["unshare", "--uts", "--pid", "--fork", "--mount-proc"]
        unshare = [*isolate, "sh", "-c", rename, self.hostname(host)]
        return ["ip", "netns", "exec", self.namespace(host), *unshare, *command]

    def destroy(self) -> None:
        """Remove the host namespaces (their veth ends, and so the peers, go with them) and the
        bridge; what is already gone is skipped. Kill the processes inside first: a namespace
        with a live process outlives its name."""
        for ns in _existing_namespaces():
            _ip("netns", "del", ns, check=False)
        for host in range(1, max(self.count, 9) + 1):
            _ip("link", "del", f"{VETH}{host}", check=False)
        _ip("link", "del", BRIDGE, check=False)
