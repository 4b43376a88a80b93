"""Several "hosts" on one machine: Linux network namespaces joined by veth pairs to a bridge of their own.

Each Lab has a unique name prefix (dw19<pid>), a switch namespace holding a bridge, and hosts: a
namespace each with one interface `eth0` at 10.213.<subnet>.<n>/24, addresses that exist only inside the
lab's own namespaces. Processes run in a host with `ip netns exec`, and, for worker hosts, in their own
UTS, PID and mount namespaces (`unshare`) with the same hostname as every other host and a machine id of
their own bind-mounted over /etc/machine-id: two real hosts can share a hostname and pids.

Cutting a host off = its switch port down (a pulled cable: the host's own interface stays up, its
packets go nowhere). Everything is removed by Lab.close(), and Lab.close_stale() removes what an earlier
run killed mid-way left behind (its creator pid is dead). Needs root, iproute2 and util-linux.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "dw19"
SUBNET = "10.213"  # 10.213.<lab subnet>.0/24, only ever inside a lab's own namespaces


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def available() -> str | None:
    """Why a lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "unshare", "nsenter"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            return f"{tool} is not installed"
    return None


@dataclass
class Host:
    lab: Lab
    name: str  # short: a, b, redis ...
    netns: str
    address: str
    port: str  # the switch-side veth end
    machine_id: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    def command(self, argv: list[str], *, own_host: bool = False) -> list[str]:
        """argv run in this host's network namespace; own_host: also its own UTS/PID/mount namespaces with
        this host's machine id and the lab's common hostname."""
        prefix = ["ip", "netns", "exec", self.netns]
        if not own_host:
            return prefix + argv
        id_file = self.lab.workdir / f"machine-id-{self.name}"
        id_file.write_text(self.machine_id + "\n")
        script = (f"mount --bind {id_file} /etc/machine-id && hostname {self.lab.hostname} && "
                  'exec "$@"')
        return prefix + ["unshare", "--uts", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc",
                         "sh", "-c", script, "host"] + argv

    def popen(self, argv: list[str], *, own_host: bool = False, env: dict | None = None,
              log: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log, "ab") if log else subprocess.DEVNULL
        kw.setdefault("stdout", out)
        kw.setdefault("stderr", out)
        proc = subprocess.Popen(self.command(argv, own_host=own_host), env=env, start_new_session=True, **kw)
        self.procs.append(proc)
        return proc

    def run(self, argv: list[str], *, own_host: bool = False, env: dict | None = None, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(argv, own_host=own_host), env=env, timeout=timeout,
                              capture_output=True, text=True, **kw)

    def cut(self) -> None:
        """Pull this host's cable: its switch port goes down."""
        sh("ip", "-n", self.lab.switch, "link", "set", self.port, "down")

    def reconnect(self) -> None:
        sh("ip", "-n", self.lab.switch, "link", "set", self.port, "up")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


class Lab:
    """A switch and hosts; use as a context manager (everything removed at the end, also on failure)."""

    def __init__(self, workdir: Path, subnet: int = 1) -> None:
        why = available()
        if why:
            raise RuntimeError(why)
        self.tag = f"{PREFIX}{os.getpid()}x{uuid.uuid4().hex[:4]}"
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.subnet = subnet
        self.hostname = socket.gethostname()  # every host shares it, as cloned boxes often do
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self.close_stale()
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str) -> Host:
        n = len(self.hosts) + 1
        netns = f"{self.tag}-{name}"
        inner, port = f"{self.tag[-4:]}h{n}", f"{self.tag[-4:]}p{n}"  # veth names: 15 characters at most
        address = f"{SUBNET}.{self.subnet}.{n}"
        sh("ip", "netns", "add", netns)
        sh("ip", "link", "add", inner, "type", "veth", "peer", "name", port)
        sh("ip", "link", "set", inner, "netns", netns)
        sh("ip", "link", "set", port, "netns", self.switch)
        sh("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        sh("ip", "-n", self.switch, "link", "set", port, "up")
        sh("ip", "-n", netns, "link", "set", inner, "name", "eth0")
        sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        sh("ip", "-n", netns, "link", "set", "lo", "up")
        host = Host(self, name, netns, address, port, uuid.uuid4().hex)
        self.hosts[name] = host
        return host

    def namespaces(self) -> list[str]:
        return [self.switch] + [h.netns for h in self.hosts.values()]

    def close(self) -> None:
        for host in self.hosts.values():
            host.stop_all()
        for netns in self.namespaces():
            _delete_netns(netns)

    @staticmethod
    def close_stale() -> None:
        """Remove the namespaces of earlier labs whose creating process is gone (killed mid-run)."""
        for netns in sh("ip", "netns", "list").stdout.split():
            match = re.fullmatch(rf"{PREFIX}(\d+)x[0-9a-f]{{4}}-.*", netns)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                _delete_netns(netns)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def exit_on_sigterm() -> None:
    """For the scripts: SIGTERM unwinds (a Lab's `with` removes its namespaces) instead of leaving them."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _delete_netns(netns: str) -> None:
    """Kill what still runs in it, then delete it (its veth ends go with it)."""
    pids = sh("ip", "netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    for _ in range(50):
        if sh("ip", "netns", "del", netns, check=False).returncode == 0:
            return
        time.sleep(0.1)
