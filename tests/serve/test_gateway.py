"""`deer-worker gateway` end to end: a real uvicorn gateway process, httpx as the client, a real
worker (`deer-worker run`, demo INT8) and a private redis-server, each on a free loopback port.

The stack is shared by the module (one model load); the tests that need a gateway with other settings
(an API key, no worker, a small bound) start their own gateway process, which loads no model.

DEER_GATEWAY_TEST_URL=http://127.0.0.1:8001 runs the HTTP-contract tests (schema, Deepstack, bad input)
against a gateway already running there, e.g. the container stack of deploy/container, and skips the
ones that must start or stop processes.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gateway_bench as gb  # noqa: E402
from gateway_bench import GatewayProcess, StreamWaiter, coordinator_post  # noqa: E402

from conftest import GENEROUS_BOUND, png_header_only  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402

SAMPLES = ROOT / "models" / "demo" / "samples"
DEER_JPEG = (SAMPLES / "day_1920x1080_deer.jpg").read_bytes()
EMPTY_JPEG = (SAMPLES / "day_640x360_empty.jpg").read_bytes()
DEMO_THRESHOLD = 0.25  # models/demo/zones.yaml's default confidence
EXTERNAL = os.environ.get("DEER_GATEWAY_TEST_URL")
own_processes = pytest.mark.skipif(bool(EXTERNAL), reason="starts and stops its own processes")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, host_pace):
    """Redis + one worker + one gateway; yields (redis server or None, gateway url, env)."""
    if EXTERNAL:
        yield None, EXTERNAL.rstrip("/"), None
        return
    tmp = tmp_path_factory.mktemp("gateway")
    server = gb.harness.RedisServer(tmp / "redis").start()
    env = gb.stack_env(server.url())
    pool = gb.start_worker(env, tmp / "worker.log")
    gateway = GatewayProcess(env, log_file=tmp / "gateway.log").start(GENEROUS_BOUND)  # loads no model
    try:
        deadline = time.monotonic() + 10 * host_pace.load_s + 30  # the worker's model load, then its registration
        while client_status(f"{gateway.url}/health") != 200:
            assert pool.proc.poll() is None, (tmp / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no worker ready in time"
            time.sleep(0.1)
        yield server, gateway.url, env
    finally:
        gateway.stop()
        pool.stop()
        server.stop("sigkill")


def client_status(url: str) -> int:
    return httpx.get(url, timeout=GENEROUS_BOUND).status_code  # one local request, not retried on a timeout


@pytest.fixture
def client():
    # httpx's default is a 5 s timeout: calls that give none get the generous bound. Requests that go to a worker are
    # bounded by the gateway itself (its 25 s default timeout answers 504), so the client's bound only catches a hang.
    with httpx.Client(timeout=GENEROUS_BOUND) as c:
        yield c


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text else 0


def test_coordinator_call_gets_the_ml_detector_schema(stack, client):
    _, url, _ = stack
    reply = coordinator_post(client, url, DEER_JPEG)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"deer_detected", "num_detections", "detections", "image_size", "confidence_threshold",
                         "model_version"}
    assert body["deer_detected"] is True and body["num_detections"] == len(body["detections"]) > 0
    assert body["image_size"] == {"width": 1920, "height": 1080}
    assert body["confidence_threshold"] == DEMO_THRESHOLD
    assert isinstance(body["model_version"], str) and body["model_version"]
    for det in body["detections"]:
        assert set(det) == {"class", "class_id", "confidence", "bbox"}
        assert det["class"] == "deer" and det["class_id"] == 0 and isinstance(det["class_id"], int)
        assert DEMO_THRESHOLD <= det["confidence"] <= 1 and _decimals(det["confidence"]) <= 4
        assert set(det["bbox"]) == {"x1", "y1", "x2", "y2"}
        assert all(_decimals(v) <= 2 for v in det["bbox"].values())
        assert 0 <= det["bbox"]["x1"] < det["bbox"]["x2"] <= 1920 and 0 <= det["bbox"]["y1"] < det["bbox"]["y2"] <= 1080
    empty = coordinator_post(client, url, EMPTY_JPEG).json()
    assert empty["deer_detected"] is False and empty["num_detections"] == 0 and empty["detections"] == []
    assert empty["image_size"] == {"width": 640, "height": 360}


@own_processes
def test_answer_is_the_queue_jobs_result(stack, client, host_pace):
    """The same snapshot through the plain queue gives the same boxes, and the model version the worker
    reports is the gateway's model_version, in /detect and in /health."""
    server, url, env = stack
    connection = server.client()
    waiter = StreamWaiter(connection)
    job_id = uuid.uuid4().hex
    enqueue_snapshot(connection, DEER_JPEG, "http", job_id=job_id, queue=env["DEER_WORKER_QUEUE"])
    message = waiter.wait(job_id, host_pace.bound(batches=1))  # one job served
    body = coordinator_post(client, url, DEER_JPEG).json()
    assert [(d["class"], d["confidence"], list(d["bbox"].values())) for d in body["detections"]] == [
        (d["class_name"], round(d["confidence"], 4), [round(v, 2) for v in d["box"]]) for d in message["detections"]]
    assert body["model_version"] == message["model"]["version"]
    assert client.get(f"{url}/health").json()["model_version"] == message["model"]["version"]


def test_deepstack_post_as_frigate_sends_it(stack, client):
    """Frigate's deepstack plugin: its model-sized region as JPEG, data={"api_key": ...}, files={"image": ...};
    it maps `label` through its labelmap and divides the box by the region's size."""
    _, url, _ = stack
    frame = cv2.imdecode(np.frombuffer((SAMPLES / "day_640x360_deer.jpg").read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    region = np.ascontiguousarray(frame[40:360, 310:630])  # a 320x320 region around the deer, as Frigate crops
    jpeg = cv2.imencode(".jpg", region)[1].tobytes()
    reply = client.post(f"{url}/v1/vision/detection", data={"api_key": ""}, files={"image": jpeg},
                        timeout=GENEROUS_BOUND)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True and set(body) == {"success", "predictions", "duration"}
    labelmap = {0: "deer"}
    mapped = []
    for p in body["predictions"]:
        assert set(p) == {"label", "confidence", "x_min", "y_min", "x_max", "y_max"}
        assert all(isinstance(p[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
        class_id = next(k for k, v in labelmap.items() if v == p["label"])
        box = (p["y_min"] / 320, p["x_min"] / 320, p["y_max"] / 320, p["x_max"] / 320)  # Frigate's order
        assert all(0.0 <= v <= 1.0 for v in box) and box[0] < box[2] and box[1] < box[3]
        mapped.append((class_id, p["confidence"], box))
    assert mapped, "the deer in the region is found"


def test_thresholds_are_honoured(stack, client):
    _, url, _ = stack
    low = coordinator_post(client, url, DEER_JPEG, conf="0.05").json()
    assert low["confidence_threshold"] == 0.05
    confidences = sorted(d["confidence"] for d in low["detections"])
    assert len(confidences) >= 2 and confidences[0] < DEMO_THRESHOLD, "a low conf keeps weaker boxes"
    cut = (confidences[0] + confidences[-1]) / 2  # between the weakest and the strongest: drops some, keeps some
    high = coordinator_post(client, url, DEER_JPEG, conf=f"{cut:.4f}").json()
    assert 0 < high["num_detections"] < low["num_detections"]
    assert all(d["confidence"] >= cut for d in high["detections"])
    form = client.post(f"{url}/detect", files={"file": ("s.jpg", DEER_JPEG, "image/jpeg")}, data={"conf": "0.99"},
                       timeout=GENEROUS_BOUND).json()  # as a form field too
    assert form["confidence_threshold"] == 0.99 and form["num_detections"] == 0

    def deepstack(minimum: str) -> list[float]:
        reply = client.post(f"{url}/v1/vision/detection", data={"min_confidence": minimum},
                            files={"image": DEER_JPEG}, timeout=GENEROUS_BOUND)
        return [p["confidence"] for p in reply.json()["predictions"]]

    everything, some = deepstack("0"), deepstack(f"{cut:.4f}")
    assert len(everything) > len(some) > 0 and all(c >= cut for c in some)


def test_detect_batch(stack, client):
    _, url, _ = stack
    reply = client.post(f"{url}/detect-batch", timeout=GENEROUS_BOUND, files=[
        ("files", ("a.jpg", DEER_JPEG, "image/jpeg")), ("files", ("b.jpg", EMPTY_JPEG, "image/jpeg")),
        ("files", ("c.jpg", b"not an image", "image/jpeg"))])
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"total_images", "successful", "deer_detected_count", "results"}
    assert (body["total_images"], body["successful"], body["deer_detected_count"]) == (3, 2, 1)
    assert [r["filename"] for r in body["results"]] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [r["success"] for r in body["results"]] == [True, True, False]
    assert body["results"][0]["result"]["deer_detected"] is True
    assert set(body["results"][2]) == {"filename", "success", "error"}
    assert body["results"][2]["error"].startswith("unsupported_format")


BAD_REQUESTS = [  # (name, endpoint, request kwargs, status, error kind)
    ("not an image", "/detect", {"files": {"file": ("x.jpg", b"hello, not a picture", "image/jpeg")}}, 400,
     "unsupported_format"),
    ("empty file", "/detect", {"files": {"file": ("x.jpg", b"", "image/jpeg")}}, 400, "empty_input"),
    ("cut JPEG", "/detect", {"files": {"file": ("x.jpg", DEER_JPEG[:3000], "image/jpeg")}}, 400, "corrupt_image"),
    ("PNG without pixel data", "/detect", {"files": {"file": ("x.png", png_header_only(64, 64), "image/png")}}, 400,
     "corrupt_image"),  # its header passes the gateway's check: the worker's decode fails the job
    ("no file field", "/detect", {"files": {"image": ("x.jpg", DEER_JPEG, "image/jpeg")}}, 400, "bad_request"),
    ("not multipart", "/detect", {"content": b"{}", "headers": {"content-type": "application/json"}}, 400,
     "bad_request"),
    ("conf not a number", "/detect?conf=high", {"files": {"file": ("x.jpg", DEER_JPEG, "image/jpeg")}}, 400,
     "bad_request"),
    ("conf 0", "/detect?conf=0", {"files": {"file": ("x.jpg", DEER_JPEG, "image/jpeg")}}, 400, "bad_request"),
    ("conf over 1", "/detect?conf=1.5", {"files": {"file": ("x.jpg", DEER_JPEG, "image/jpeg")}}, 400, "bad_request"),
    ("batch without files", "/detect-batch", {"files": {"file": ("x.jpg", DEER_JPEG, "image/jpeg")}}, 400,
     "bad_request"),
    ("deepstack not an image", "/v1/vision/detection", {"files": {"image": ("x.jpg", b"GIF89a...", "image/gif")}},
     400, "unsupported_format"),
    ("deepstack no image", "/v1/vision/detection", {"data": {"min_confidence": "0.4"}}, 400, "bad_request"),
    ("deepstack bad min_confidence", "/v1/vision/detection",
     {"files": {"image": ("x.jpg", DEER_JPEG, "image/jpeg")}, "data": {"min_confidence": "-1"}}, 400, "bad_request"),
]


@pytest.mark.parametrize("name,endpoint,kwargs,status,kind", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_its_status(stack, client, name, endpoint, kwargs, status, kind):
    _, url, _ = stack
    reply = client.post(f"{url}{endpoint}", timeout=GENEROUS_BOUND, **kwargs)
    assert reply.status_code == status, reply.text
    body = reply.json()
    if endpoint.startswith("/v1/"):
        assert body["success"] is False and body["error"].startswith(f"{kind}:")
    else:
        assert body["error_kind"] == kind and body["detail"]


def test_bad_input_moves_a_counter_and_the_gateway_goes_on(stack, client):
    _, url, _ = stack

    def counted() -> float:
        text = client.get(f"{url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("deer_worker_gateway_requests_total{")
                   and 'error_kind="unsupported_format"' in line and 'endpoint="detect"' in line)

    before = counted()
    assert coordinator_post(client, url, b"junk").status_code == 400
    assert counted() == before + 1
    assert coordinator_post(client, url, DEER_JPEG).status_code == 200


@own_processes
def test_body_over_the_bound_is_413(stack, client, tmp_path):
    _, _, env = stack
    gateway = GatewayProcess(env, "--max-body", "100000", log_file=tmp_path / "g.log").start(GENEROUS_BOUND)
    try:
        big = bytes(200_000)
        declared = client.post(f"{gateway.url}/detect", files={"file": ("x.jpg", big, "image/jpeg")},
                               timeout=GENEROUS_BOUND)
        assert declared.status_code == 413 and declared.json()["error_kind"] == "payload_too_large"

        def chunks():  # no Content-Length: the bound holds on the bytes read
            boundary = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n\r\n"
            yield boundary
            for _ in range(20):
                yield bytes(10_000)
            yield b"\r\n--b--\r\n"

        streamed = client.post(f"{gateway.url}/detect", content=chunks(), timeout=GENEROUS_BOUND,
                               headers={"content-type": "multipart/form-data; boundary=b"})
        assert streamed.status_code == 413, streamed.text
    finally:
        gateway.stop()


@own_processes
def test_api_key(stack, client, tmp_path):
    _, _, env = stack
    gateway = GatewayProcess({**env, "DEER_GATEWAY_API_KEY": "s3cret"},
                             log_file=tmp_path / "g.log").start(GENEROUS_BOUND)
    try:
        files = {"file": ("snapshot.jpg", DEER_JPEG, "image/jpeg")}
        assert client.post(f"{gateway.url}/detect", files=files, timeout=GENEROUS_BOUND).status_code == 401
        assert client.post(f"{gateway.url}/detect", files=files, timeout=GENEROUS_BOUND,
                           headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post(f"{gateway.url}/detect", files=files, timeout=GENEROUS_BOUND,
                           headers={"X-API-Key": "s3cret"}).status_code == 200
        image = {"image": DEER_JPEG}
        refused = client.post(f"{gateway.url}/v1/vision/detection", data={"api_key": "wrong"}, files=image,
                              timeout=GENEROUS_BOUND)
        assert refused.status_code == 401 and refused.json()["success"] is False
        assert client.post(f"{gateway.url}/v1/vision/detection", data={"api_key": "s3cret"}, files=image,
                           timeout=GENEROUS_BOUND).json()["success"] is True
        assert client.get(f"{gateway.url}/health").status_code == 200  # probes need no key
    finally:
        gateway.stop()


@own_processes
def test_no_ready_worker_health_503_and_timeout_504(stack, client, tmp_path):
    """A gateway on a queue no worker serves: /health 503 (a banner that checks only for 200 sees the
    dead pool); a request waits its timeout and gets 504."""
    _, _, env = stack
    timeout = 2.0  # the gateway's own: its expiry (504) is what the test expects
    gateway = GatewayProcess({**env, "DEER_WORKER_QUEUE": "nobody-serves-this"}, "--timeout", str(timeout),
                             log_file=tmp_path / "g.log").start(GENEROUS_BOUND)
    try:
        health = client.get(f"{gateway.url}/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["workers_ready"] == 0
        assert {"status", "model_version", "confidence_threshold"} <= set(health.json())
        started = time.monotonic()
        late = coordinator_post(client, gateway.url, EMPTY_JPEG)
        assert late.status_code == 504 and late.json()["error_kind"] == "timeout"
        assert time.monotonic() - started >= timeout * 0.95
    finally:
        gateway.stop()


def _gauge(client: httpx.Client, url: str, name: str) -> float:
    line = next(line for line in client.get(f"{url}/metrics").text.splitlines() if line.startswith(name + " "))
    return float(line.split()[1])


@own_processes
def test_overload_is_429_at_once_with_memory_flat(stack, client, tmp_path):
    """With `max_waiting` requests waiting (no worker serves their queue), every further one gets 429
    without its body being kept: 200 rejected 200 kB bodies leave the gateway's RSS flat."""
    _, _, env = stack
    # The four waiting requests must stay in hand through 230 rejected posts: the gateway holds them for a
    # generous multiple of the bound (230 local round trips, not one), and their client a bound longer still.
    held = 5 * GENEROUS_BOUND
    gateway = GatewayProcess({**env, "DEER_WORKER_QUEUE": "nobody-serves-this"}, "--timeout", str(held),
                             "--max-waiting", "4", log_file=tmp_path / "g.log").start(GENEROUS_BOUND)
    pool = concurrent.futures.ThreadPoolExecutor(4)

    def wait_in_hand(payload: bytes) -> httpx.Response:  # coordinator_post's request, with a timeout past `held`
        return httpx.Client().post(f"{gateway.url}/detect", files={"file": ("snapshot.jpg", payload, "image/jpeg")},
                                   timeout=held + GENEROUS_BOUND)

    try:
        payload = DEER_JPEG  # ~200 kB a request
        waiting = [pool.submit(wait_in_hand, payload) for _ in range(4)]
        deadline = time.monotonic() + GENEROUS_BOUND
        while _gauge(client, gateway.url, "deer_worker_gateway_requests_in_progress") < 4:  # the 4 in hand
            assert time.monotonic() < deadline, "the four requests never reached the gateway"
            time.sleep(0.05)
        probe = coordinator_post(client, gateway.url, payload)
        assert probe.status_code == 429 and probe.json()["error_kind"] == "overloaded" and probe.headers["retry-after"]
        statuses = [coordinator_post(client, gateway.url, payload).status_code for _ in range(30)]  # warm-up
        baseline = gateway.rss_kb()
        statuses += [coordinator_post(client, gateway.url, payload).status_code for _ in range(200)]
        grown = gateway.rss_kb() - baseline
        assert statuses == [429] * 230
        assert not any(w.done() for w in waiting), "the four waiting requests are still in hand"
        # kept, 200 bodies of 200 kB would be 40 MB; flat here means under a tenth of that
        assert grown < 200 * len(payload) / 1024 / 10, f"RSS grew {grown} kB over 200 rejected requests"
    finally:
        gateway.stop(signal.SIGKILL)  # ends the four waiting requests now, not after their timeout
        pool.shutdown(wait=True, cancel_futures=True)


@own_processes
def test_redis_down_is_503_and_the_gateway_comes_back(stack, client, host_pace):
    server, url, _ = stack
    assert coordinator_post(client, url, EMPTY_JPEG).status_code == 200
    time.sleep(2)  # the worker back in its blocking dequeue, where RQ retries a lost Redis without re-registering
    server.stop("sigkill")
    try:
        down = coordinator_post(client, url, EMPTY_JPEG)
        assert down.status_code == 503 and down.json()["error_kind"] == "redis_unavailable"
        health = client.get(f"{url}/health", timeout=GENEROUS_BOUND)
        assert health.status_code == 503 and health.json()["redis"] is False
    finally:
        server.start()
    # the worker reconnects (backoff <= 2 s) and registers again; the gateway's reader resumes
    gb.wait_health(url, 200, 2 * 2.0 + host_pace.bound(batches=1))
    back = coordinator_post(client, url, DEER_JPEG)
    assert back.status_code == 200 and back.json()["deer_detected"] is True


def test_health_200_with_a_ready_worker(stack, client):
    _, url, _ = stack
    reply = client.get(f"{url}/health")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "healthy" and body["confidence_threshold"] == DEMO_THRESHOLD
    assert isinstance(body["model_version"], str) and body["model_version"]
    json.dumps(body)


@own_processes
def test_taken_port_is_one_error_line():
    import socket
    import subprocess

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "worker", "gateway", "--port", str(port)], cwd=ROOT,
                             capture_output=True, text=True, timeout=GENEROUS_BOUND)  # starts, loads no model, exits
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and run.stderr.startswith("deer-worker: config: ")
    assert "Traceback" not in run.stderr


@own_processes
def test_health_reports_the_model_state_stored_in_redis(stack, client, tmp_path):
    """After a reload or promote, /health names the desired model and the version the workers answered,
    before any result of it goes through the gateway (it used to say the config's model until then).
    A gateway of its own on another db of the stack's Redis: the stack's worker must not switch."""
    import redis as redis_py

    from worker.inference.runtime import load_spec
    from worker.serve.model_state import FAILED, SWITCHED, answer, set_desired

    server, _, env = stack
    url = server.url(db=3)
    gateway = GatewayProcess({**env, "DEER_WORKER_REDIS_URL": url, "DEER_WORKER_QUEUE": "model-state"},
                             log_file=tmp_path / "g.log").start(GENEROUS_BOUND)
    connection = redis_py.Redis.from_url(url)
    health = lambda: client.get(f"{gateway.url}/health").json()  # noqa: E731
    try:
        configured = load_spec(env["DEER_WORKER_MODEL"])[0].version
        assert health()["model_version"] == configured and health()["model"] is None  # no state: the config's
        card = str(ROOT / "models" / "demo")
        assert load_spec(card)[0].version != configured  # else this test could not tell them apart
        desired = set_desired(connection, card)
        body = health()  # switching: the desired model's own version
        assert body["model_version"] == load_spec(card)[0].version
        assert body["model"]["desired"] == card and body["model"]["workers_switched"] == 0
        answer(connection, desired.generation, "w1", SWITCHED, model=card, version="demo v9 (promoted)")
        body = health()  # what the workers switched to, as they reported it
        assert body["model_version"] == "demo v9 (promoted)" and body["model"]["workers_switched"] == 1
        broken = set_desired(connection, str(tmp_path / "no-such-model"))
        answer(connection, broken.generation, "w1", FAILED, model=broken.model, reason="ModelLoadError: ...")
        body = health()  # every worker kept the previous model: its version, not the broken one's
        assert body["model_version"] == load_spec(card)[0].version and body["model"]["previous"] == card
        assert body["model"]["workers_failed"] == 1
    finally:
        gateway.stop()
        connection.flushdb()
