"""A real Prometheus (Debian's `prometheus` binary) scraping worker /metrics endpoints at 1 s: the
latency quantile the dashboard draws comes back as a number, and every dashboard and rule
expression evaluates on the real server."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import GENEROUS_BOUND, tool


ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "deer-worker.rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "deer-worker.json"
PROMETHEUS, needs_prometheus = tool("prometheus", "prometheus")
WAIT = GENEROUS_BOUND  # upper bound for a wait on the server alone (no jobs in it), never a timing assertion

pytestmark = needs_prometheus


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- scrape targets ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def targets(host_pace):
    """host:port of each worker's metrics endpoint of a real pool (`deer-worker run --workers 2`),
    with real snapshot jobs flowing while the module runs: good ones, corrupt ones, expired ones."""
    import base64
    import os
    import signal
    import sys

    import redis
    from rq import Queue
    from rq.worker import Worker

    from conftest import FP32_MODEL, TEST_REDIS_URL, sample
    from worker.jobqueue.connections import SERIALIZER
    from worker.constants import JOB_FUNCTION

    conn = redis.Redis.from_url(TEST_REDIS_URL)
    conn.flushdb()
    queue_name, base = "prom-snapshots", free_port()
    while any(_port_taken(base + i) for i in range(2)):
        base = free_port()
    env = dict(os.environ, DEER_WORKER_REDIS_URL=TEST_REDIS_URL, DEER_WORKER_QUEUE=queue_name,
               DEER_WORKER_METRICS_PORT=str(base), DEER_WORKER_MODEL=str(FP32_MODEL), DEER_WORKER_MAX_AGE="30")
    pool = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--workers", "2"],
                            cwd=ROOT, env=env, start_new_session=True)
    queue = Queue(queue_name, connection=conn, serializer=SERIALIZER)
    stop = threading.Event()
    good = base64.b64encode(sample("day_640x360_deer.jpg")).decode()
    corrupt = base64.b64encode(sample("day_640x360_deer.jpg")[:2000]).decode()

    def feed() -> None:
        n = 0
        while not stop.wait(0.1):
            n += 1
            captured, snap = time.time(), good
            if n % 10 == 0:
                snap = corrupt
            elif n % 10 == 5:
                captured -= 3600  # perishable: expires unrun
            queue.enqueue(JOB_FUNCTION, {"v": 1, "camera_id": "10cea9e4511f" if n % 2 else "cam-x",
                                         "captured_at": captured, "snapshot": {"b64": snap}})

    feeder = threading.Thread(target=feed, daemon=True)
    try:
        deadline = time.monotonic() + max(120, 20 * host_pace.load_s)  # two workers load their models side by side
        while Worker.count(connection=conn, queue=queue) < 2:
            assert pool.poll() is None, f"pool exited with {pool.returncode}"
            assert time.monotonic() < deadline, "pool did not start"
            time.sleep(0.2)
        feeder.start()
        yield [f"127.0.0.1:{base + i}" for i in range(2)]
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(timeout=GENEROUS_BOUND)  # a thread ending
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(host_pace.bound(batches=2))  # each worker finishes the batch in hand, then exits
        conn.flushdb()


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- the server --------------------------------------------------------------------------------
@dataclass
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=GENEROUS_BOUND) as resp:  # not retried
                return json.load(resp)
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            return json.load(exc)

    def query(self, expr: str) -> dict:
        return self.api("/api/v1/query", query=expr)

    def wait_for(self, what: str, check, timeout: float = WAIT):
        """Poll check() until it returns something truthy; fail after timeout with the server log."""
        deadline, last = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.25)
        pytest.fail(f"{what}: not within {timeout:.0f} s (last: {last!r})\n{self.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prometheus(targets, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],  # the shipped rules must load and evaluate on a real server
        "scrape_configs": [{"job_name": "deer-worker", "static_configs": [{"targets": targets}]}],
    }))
    port, log = free_port(), tmp / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        server.wait_for("prometheus ready", ready)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=GENEROUS_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=GENEROUS_BOUND)


def scalar(result: dict) -> float | None:
    """The value of a one-element vector result, or None."""
    if result.get("status") != "success" or len(result["data"]["result"]) != 1:
        return None
    return float(result["data"]["result"][0]["value"][1])


def grafana_to_promql(expr: str) -> str:
    return (expr.replace("$__rate_interval", "30s").replace("$__range", "1m")
            .replace("${instance}", ".*").replace("$instance", ".*"))


# --- tests -------------------------------------------------------------------------------------
def test_both_targets_are_scraped(prometheus, targets):
    up = prometheus.wait_for("both targets up", lambda: scalar(prometheus.query('count(up{job="deer-worker"} == 1)'))
                             == len(targets))
    assert up


def test_inference_median_from_the_histogram(prometheus, host_pace):
    expr = ('histogram_quantile(0.5, sum by (le) (rate(deer_worker_stage_duration_seconds_bucket'
            '{stage="inference"}[30s])))')

    def numeric():
        value = scalar(prometheus.query(expr))
        return value if value is not None and math.isfinite(value) else None

    median = prometheus.wait_for("inference median", numeric, host_pace.bound(batches=1))  # jobs served, scraped
    assert 0 < median < 5.0  # a real model's inference time, in seconds, estimated from the buckets


def test_every_dashboard_expression_returns_data(prometheus, host_pace):
    dash = json.loads(DASHBOARD.read_text())
    # The worker's panels, against this pool's scrape. The MQTT bridge's panels (job deer-worker-mqtt)
    # need a broker and a bridge; tests/test_deploy.py checks their metric names against the bridge's own
    # exposition instead.
    exprs = [(p["title"], grafana_to_promql(t["expr"])) for p in dash["panels"] for t in p["targets"]
             if 'job="deer-worker-mqtt"' not in t["expr"]]
    assert len(exprs) >= 15
    # Wait until rates have two scrapes to work on, then every panel's query must have series.
    prometheus.wait_for("rates available", lambda: scalar(prometheus.query(
        'sum(rate(deer_worker_jobs_total{job="deer-worker"}[30s])) > 0')), host_pace.bound(batches=1))
    empty, errors = [], []
    for title, expr in exprs:
        result = prometheus.query(expr)
        if result["status"] != "success":
            errors.append((title, expr, result.get("error")))
        elif not result["data"]["result"]:
            empty.append((title, expr))
    assert not errors, errors
    assert not empty, empty


def test_rules_load_and_evaluate(prometheus):
    def evaluated():
        groups = prometheus.api("/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = prometheus.wait_for("rules evaluated", evaluated)
    assert {r["name"] for r in rules} >= {"DeerWorkerInferenceSlow", "DeerWorkerQueueBacklogGrowing",
                                          "DeerWorkerSnapshotsExpiring", "DeerWorkerNoReadyWorker",
                                          "DeerWorkerErrorRate", "job:deer_worker_jobs_failed:ratio_rate5m"}
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad


def test_recording_rules_produce_series(prometheus, host_pace):
    for record in re.findall(r"record: (\S+)", RULES.read_text()):  # series of the jobs the pool serves
        prometheus.wait_for(f"series for {record}", lambda: prometheus.query(record)["data"]["result"],
                            host_pace.bound(batches=1))
