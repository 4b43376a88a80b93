"""Jobs carry data, never code or requests: RQ callbacks and webhooks named by a job are refused,
and never imported, called or sent, by a worker or by the recovery a pool runs.

RQ imports a job's callback by its dotted path and calls it (on_success, on_failure, on_stopped),
and sends its webhooks (any URL, method, headers and timeout) from whatever process handles the job:
anyone who can write to the queue could otherwise run code on, or make requests from, worker hosts.
"""

from __future__ import annotations

import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from rq import Callback, Queue
from rq.webhook import Webhook

from conftest import FP32_MODEL, sample
from crash_driver import go, launch
from relsupport import harness, private_redis  # noqa: F401 - fixture
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.jobqueue.connections import SERIALIZER
from worker.constants import JOB_FUNCTION
from worker.jobqueue.recovery import recover_jobs, worker_name
from worker.jobqueue.consumer import DeerWorker

QUEUE = "hooks"
HOOK = "hook_targets.touch"


@pytest.fixture
def marker(tmp_path, monkeypatch):
    path = tmp_path / "hook-was-called"
    monkeypatch.setenv("DEER_HOOK_MARKER", str(path))
    return path


@pytest.fixture
def http_sink():
    """A local HTTP server that records every request a webhook would make."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(("GET", self.path))
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def _payload(data: bytes | None = None) -> dict:
    import base64

    data = sample("day_640x360_deer.jpg") if data is None else data
    return {"v": 1, "camera_id": "cam1", "captured_at": time.time(), "snapshot": {"b64": base64.b64encode(data).decode()}}


def _work(conn, detector) -> None:
    config = WorkerConfig(redis_url="redis://unused", queue=QUEUE, metrics_port=0, max_age=600)
    DeerWorker([Queue(QUEUE, connection=conn, serializer=SERIALIZER)], connection=conn, detector=detector,
               cameras=parse_camera_book({}), config=config, name=f"hooks-{time.monotonic_ns()}").work(burst=True)


def test_callbacks_named_by_a_job_are_refused_never_called(private_redis, fp32_detector, marker):
    conn = private_redis.client()
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    hooked = [queue.enqueue(JOB_FUNCTION, _payload(), on_success=Callback(HOOK)),
              queue.enqueue(JOB_FUNCTION, _payload(b"not an image"), on_failure=Callback(HOOK)),
              queue.enqueue(JOB_FUNCTION, _payload(), on_stopped=Callback(HOOK))]
    plain = queue.enqueue(JOB_FUNCTION, _payload())
    _work(conn, fp32_detector)
    assert not marker.exists(), marker.read_text()
    outcome = harness.account(conn, [j.id for j in hooked + [plain]]).outcome
    assert [outcome[j.id] for j in hooked] == [("failed", "forbidden_function")] * 3
    assert outcome[plain.id] == ("ok", "none")


def test_webhooks_named_by_a_job_are_refused_never_sent(private_redis, fp32_detector, http_sink):
    url, seen = http_sink
    conn = private_redis.client()
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    jobs = [queue.enqueue(JOB_FUNCTION, _payload(), webhooks=[Webhook(f"{url}/finished", "finished")]),
            queue.enqueue(JOB_FUNCTION, _payload(b""), webhooks=[Webhook(f"{url}/failed", "failed", method="POST")])]
    _work(conn, fp32_detector)
    assert seen == []
    outcome = harness.account(conn, [j.id for j in jobs]).outcome
    assert [outcome[j.id] for j in jobs] == [("failed", "forbidden_function")] * 2


def test_recovery_never_calls_a_failure_callback_planted_on_a_started_job(private_redis, marker, host_pace):
    """An abandoned job's failure callback is what RQ's registry cleanup calls: in the pool parent."""
    conn = private_redis.client()
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    jobs = [queue.enqueue(JOB_FUNCTION, _payload()) for _ in range(4)]
    crashed = launch(private_redis.url(), QUEUE, FP32_MODEL, "mid_inference")
    go(crashed, host_pace.bound(batches=1))  # its model loaded: it dies in its first batch
    assert crashed.returncode == -signal.SIGKILL
    for job in jobs:  # what someone with write access to Redis could do to jobs in flight
        conn.hset(job.key, "failure_callback_name", HOOK)
    assert recover_jobs(conn, [QUEUE], lambda name: name == worker_name(0, pid=crashed.pid)) == 4
    assert not marker.exists()
