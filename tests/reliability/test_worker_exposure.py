"""What a running worker exposes on the network: its health server on metrics_host:metrics_port +
index and nothing else (sockets read from /proc), serving only /metrics, /healthz and /readyz, and
still answering while idle clients hold connections open. tests/test_health.py covers the server
class; this is the real `deer-worker run` process and pool."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys

import pytest

from conftest import GENEROUS_BOUND, ROOT
from relsupport import harness, private_redis  # noqa: F401 - fixture


def listening(pid: int) -> set[tuple[str, int, str]]:
    """(address, port, proto) of every listening TCP socket and bound UDP socket the process owns."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/net/{proto}") as table:
            next(table)
            for line in table:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if inode not in inodes or (proto.startswith("tcp") and state != "0A"):  # 0A = LISTEN
                    continue
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                if proto.endswith("6"):
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    text = socket.inet_ntop(socket.AF_INET6, raw)
                else:
                    text = socket.inet_ntop(socket.AF_INET, raw[::-1])
                found.add((text, int(port, 16), proto))
    return found


def _request(host: str, port: int, path: str, method: str = "GET"):
    conn = http.client.HTTPConnection(host, port, timeout=GENEROUS_BOUND)  # one local request
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _run(url: str, *args: str, **env) -> subprocess.Popen:
    environment = harness.worker_env(url, **env)
    return subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", *args], cwd=ROOT,
                            env=environment, stderr=subprocess.DEVNULL, start_new_session=True)


def _ready(host: str, port: int) -> bool:
    try:
        return _request(host, port, "/readyz")[0] == 200
    except OSError:
        return False


def test_a_worker_listens_only_on_its_metrics_address_and_serves_only_health(private_redis, host_pace):
    port = harness.free_port()
    worker = _run(private_redis.url(), metrics_host="127.0.0.2", metrics_port=port)
    try:
        harness.wait_for(lambda: _ready("127.0.0.2", port), host_pace.bound(loads=1), "the worker to be ready", 0.1)
        assert listening(worker.pid) == {("127.0.0.2", port, "tcp")}
        idle = [socket.create_connection(("127.0.0.2", port)) for _ in range(20)]  # slow or stuck clients
        try:
            status, headers, body = _request("127.0.0.2", port, "/metrics")
            assert status == 200 and b"deer_worker_ready 1.0" in body and b"deer_worker_jobs_total" in body
            assert headers["Server"].strip() == "deer-worker"  # no Python version
            assert _request("127.0.0.2", port, "/healthz")[0] == 200
            for path in ("/", "/etc/passwd", "/../../etc/passwd", "/metrics/../worker.yaml", "/configs/worker.yaml",
                         "/.env", "/debug", "/proc/self/environ"):
                assert _request("127.0.0.2", port, path)[0] == 404, path
            for method in ("POST", "PUT", "DELETE", "TRACE", "CONNECT"):
                assert _request("127.0.0.2", port, "/metrics", method)[0] == 405, method
        finally:
            for conn in idle:
                conn.close()
        with pytest.raises(ConnectionRefusedError):
            _request("127.0.0.1", port, "/metrics")
    finally:
        worker.terminate()
        assert worker.wait(GENEROUS_BOUND) == 0  # an idle worker stopping


def test_metrics_port_zero_opens_no_socket_at_all(private_redis, host_pace):
    worker = _run(private_redis.url(), metrics_port=0)
    try:
        harness.wait_for(lambda: harness.registered_workers(private_redis.client(), harness.QUEUE),
                         host_pace.bound(loads=1), "the worker to register", 0.1)
        assert listening(worker.pid) == set()
    finally:
        worker.terminate()
        assert worker.wait(GENEROUS_BOUND) == 0  # an idle worker stopping


def test_pool_worker_i_listens_on_port_plus_i_only(private_redis, host_pace):
    port = harness.free_port()
    while any(_port_busy(port + i) for i in range(2)):
        port = harness.free_port()
    pool = _run(private_redis.url(), "--workers", "2", metrics_port=port)
    try:
        harness.wait_for(lambda: all(_ready("127.0.0.1", port + i) for i in range(2)), host_pace.bound(loads=2),
                         "both workers", 0.1)  # two loads side by side
        children = harness.children_of(pool.pid)
        assert len(children) == 2
        found = {pid: listening(pid) for pid in children}
        assert sorted(found.values(), key=lambda s: min(s)) == [{("127.0.0.1", port, "tcp")},
                                                                {("127.0.0.1", port + 1, "tcp")}]
        assert listening(pool.pid) == set()  # the pool parent serves nothing
    finally:
        os.killpg(pool.pid, 15)
        pool.wait(GENEROUS_BOUND)  # two idle workers stopping


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
