"""HealthServer over real sockets: the three endpoints, nothing else, on the configured host only."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from conftest import GENEROUS_BOUND
from worker.errors import ConfigError
from worker.serve.health import HealthServer
from worker.serve.metrics import WorkerMetrics


class Switch:
    """A settable callable standing in for redis_ping / ready."""

    def __init__(self, value: bool = True) -> None:
        self.value: bool | Exception = value

    def __call__(self) -> bool:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


@pytest.fixture
def probes():
    return Switch(True), Switch(False)


@pytest.fixture
def server(probes):
    redis_ping, ready = probes
    metrics = WorkerMetrics(camera_labels=["front"], class_names=["deer"], queues=["deer-snapshots"])
    metrics.observe_job(stages={"inference": 0.02}, total=0.03, batch_size=1)
    with HealthServer(metrics, "127.0.0.1", 0, redis_ping=redis_ping, ready=ready) as srv:
        yield srv


def request(srv: HealthServer, path: str, method: str = "GET", host: str = "127.0.0.1"):
    conn = http.client.HTTPConnection(host, srv.port, timeout=GENEROUS_BOUND)  # one local request, not retried
    try:
        conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_port_zero_binds_a_real_port_on_the_configured_host(server):
    assert server.port > 0
    assert server._server.server_address[0] == "127.0.0.1"


def test_metrics(server):
    status, headers, body = request(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert b'deer_worker_stage_duration_seconds_count{stage="inference"} 1.0' in body
    status, headers, body = request(server, "/metrics?name[]=x")  # query strings are ignored, not a new path
    assert status == 200 and b"deer_worker_ready" in body


def test_head_sends_headers_only(server):
    status, headers, body = request(server, "/metrics", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100


def test_healthz_ok_and_redis_down(server, probes):
    redis_ping, _ = probes
    status, headers, body = request(server, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok", "redis": True})
    assert headers["Content-Type"] == "application/json"
    redis_ping.value = False
    status, _, body = request(server, "/healthz")
    assert status == 503 and json.loads(body)["redis"] is False
    redis_ping.value = ConnectionError("Connection refused")
    status, _, body = request(server, "/healthz")
    assert status == 503 and "ConnectionError: Connection refused" in json.loads(body)["reason"]
    redis_ping.value = True
    assert request(server, "/healthz")[0] == 200


def test_readiness_flips(server, probes):
    _, ready = probes
    assert request(server, "/readyz")[0] == 503
    ready.value = True
    assert request(server, "/readyz")[0] == 200
    ready.value = RuntimeError("boom")
    assert request(server, "/readyz")[0] == 503
    ready.value = False
    assert request(server, "/readyz")[0] == 503


@pytest.mark.parametrize("path", ["/", "/metrics/", "/metrics/../etc/passwd", "/../etc/passwd", "/etc/passwd",
                                  "///etc/passwd", "http://x/metrics", "/healthz/x", "/readyz.json", "/Metrics", "/metrics%2f..%2fx",
                                  "/tests", "/worker/health.py"])
def test_everything_else_is_404(server, path):
    status, _, body = request(server, path)
    assert status == 404 and body == b"not found\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(server, method):
    status, headers, _ = request(server, "/metrics", method)
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert request(server, "/healthz")[0] == 200  # and the server carries on


def test_binds_only_the_configured_address():
    # All of 127/8 is loopback on Linux: a server on 127.0.0.2 must not answer on 127.0.0.1.
    metrics = WorkerMetrics(camera_labels=[], class_names=[], queues=[])
    with HealthServer(metrics, "127.0.0.2", 0, redis_ping=lambda: True, ready=lambda: True) as srv:
        assert request(srv, "/readyz", host="127.0.0.2")[0] == 200
        with pytest.raises(ConnectionRefusedError):
            request(srv, "/readyz", host="127.0.0.1")


def test_stop_releases_the_port_and_is_idempotent():
    metrics = WorkerMetrics(camera_labels=[], class_names=[], queues=[])
    srv = HealthServer(metrics, "127.0.0.1", 0, redis_ping=lambda: True, ready=lambda: True).start()
    port = srv.port
    srv.stop()
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_port_in_use_is_a_config_error():
    metrics = WorkerMetrics(camera_labels=[], class_names=[], queues=[])
    with HealthServer(metrics, "127.0.0.1", 0, redis_ping=lambda: True, ready=lambda: True) as first:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{first.port}"):
            HealthServer(metrics, "127.0.0.1", first.port, redis_ping=lambda: True, ready=lambda: True).start()
