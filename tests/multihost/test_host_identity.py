"""Worker identity across hosts: two hosts with the same hostname and the same pids (their own UTS and
PID namespaces), told apart by their machine ids (each bind-mounted over /etc/machine-id).

A worker starting on host A recovers the jobs of dead workers *of its own host* at once; a live worker
on host B whose pid happens not to exist on A must keep its job (before issue 19 its name was
deer-<hostname>-w<i>.<pid>, the same form on both hosts, and A took it for dead).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rq.queue import Queue
from rq.registry import StartedJobRegistry

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "multihost"))
sys.path.insert(0, str(ROOT / "benchmarks" / "reliability"))

import harness  # noqa: E402
import netlab  # noqa: E402
from conftest import GENEROUS_BOUND, tool  # noqa: E402
from worker.constants import JOB_FUNCTION  # noqa: E402
from worker.jobqueue.connections import SERIALIZER  # noqa: E402
from worker.jobqueue.recovery import dead_on_this_host, worker_name  # noqa: E402

_, needs_ip = tool("ip", "iproute2")
pytestmark = [needs_ip, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]
DRIVER = Path(__file__).with_name("identity_driver.py")
QUEUE = "deer-identity"
BURN_PIDS = "; ".join(["/bin/true"] * 30)


@pytest.fixture
def lab_redis(tmp_path):
    """A lab of two hosts and a private redis-server both reach over a unix socket (no network needed)."""
    sock = tmp_path / "redis.sock"
    server = harness.RedisServer(tmp_path / "redis", conf=[f"unixsocket {sock}", "unixsocketperm 700"]).start(
        GENEROUS_BOUND)
    lab = netlab.Lab(tmp_path / "lab", subnet=12)
    try:
        yield lab, server, f"unix://{sock}"
    finally:
        lab.close()
        server.stop("sigkill", GENEROUS_BOUND)


def _recover_on(host, url: str) -> int:
    done = host.run(["sh", "-c", f'exec {sys.executable} {DRIVER} recover {url} {QUEUE}'], own_host=True, cwd=ROOT,
                    timeout=GENEROUS_BOUND)  # a process that starts, recovers and exits: no model
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_a_live_worker_on_another_host_with_the_same_hostname_is_not_recovered(lab_redis):
    lab, server, url = lab_redis
    host_a, host_b = lab.add_host("a"), lab.add_host("b")
    conn = server.client()
    Queue(QUEUE, connection=conn, serializer=SERIALIZER).enqueue(JOB_FUNCTION, "{}")
    # B's worker runs after 30 short-lived processes: a pid that neither A's nor B's next python (pid 1,
    # its threads 2, 3, ...: a thread id answers kill(0) too) has
    holder = host_b.popen(["sh", "-c", f"{BURN_PIDS}; {sys.executable} {DRIVER} hold {url} {QUEUE}; :"], own_host=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, cwd=ROOT)
    try:
        name_b = holder.stdout.readline().decode().strip()
        assert name_b.startswith(f"deer-{lab.hostname}-{host_b.machine_id[:8]}-w0."), name_b
        started = StartedJobRegistry(QUEUE, connection=conn, serializer=SERIALIZER)
        assert len(started.get_job_ids()) == 1
        assert _recover_on(host_a, url) == 0  # another host's live worker: left alone
        assert len(started.get_job_ids()) == 1
    finally:
        holder.stdin.close()
        holder.wait(GENEROUS_BOUND)  # stdin closed: it exits
    # B's worker is gone now: B's own next start-up recovers its job at once (same hostname, same machine id)
    assert _recover_on(host_b, url) == 1
    assert started.get_job_ids() == []


def test_names_carry_hostname_and_host_identity_and_only_this_hosts_dead_are_dead():
    dead_pid = 2 ** 22 + 1  # above pid_max's default: no such process
    ours = worker_name(3, pid=dead_pid)
    assert dead_on_this_host(ours)
    assert not dead_on_this_host(worker_name(3, host_id="otherbox", pid=dead_pid))
    configured = worker_name(0, host_id="rack2_box7", pid=dead_pid)
    assert configured.endswith(f"-rack2_box7-w0.{dead_pid}")
    assert dead_on_this_host(configured, "rack2_box7") and not dead_on_this_host(configured)
    assert not dead_on_this_host(worker_name(0))  # this very process
