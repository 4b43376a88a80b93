"""`deer-worker mqtt` end to end: a private Mosquitto, a private redis-server (AOF on: a restart keeps
the queue and the results stream), a real worker on the demo model and the bridge as a subprocess.

The module's broker, Redis, worker and bridge are shared; each test uses cameras of its own. The
tests that restart the bridge or need other settings start a bridge of their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import mqtt_harness as mh  # noqa: E402
from harness import Pool, RedisServer, TlsFiles, free_port, sample_images, wait_for, worker_env  # noqa: E402
from conftest import GENEROUS_BOUND, tool  # noqa: E402

MOSQUITTO, needs_mosquitto = tool("mosquitto", "mosquitto")
pytestmark = needs_mosquitto

QUEUE = "deer-mqtt-test"
QUIET = 2.0  # s: quiet_time of the shared bridge
AFTER = 1.5  # s: attributes_after of the shared bridge
MAX_BYTES = 1_000_000
DEER, EMPTY = sample_images(("day_640x360_deer.jpg", "day_640x360_empty.jpg"))


def variant(jpeg: bytes, n: int) -> bytes:
    """The same picture with a JPEG comment (COM segment) making its bytes unique."""
    text = f"snapshot {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


class Stack:
    def __init__(self, tmp: Path, pace) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis", conf=["appendonly yes", "appendfsync always"]).start(GENEROUS_BOUND)
        self.broker = mh.Mosquitto(tmp / "mosquitto").start(GENEROUS_BOUND)
        self.env = worker_env(self.redis.url(), queue=QUEUE, batch="1", max_age=600.0,
                              zones="models/demo/zones.yaml", max_snapshot_bytes=MAX_BYTES)
        self.pool = Pool(self.env, workers=1, log_file=tmp / "worker.log").start()
        # a model load on this host before the first result can come, and up to 15 jobs (batch 1) in one wait
        self.result_timeout = pace.bound(loads=1, batches=15)
        self.bridges: list[mh.BridgeProcess] = []

    def bridge(self, name: str, **settings) -> tuple[mh.BridgeProcess, int]:
        port = free_port()
        workdir = self.tmp / name
        workdir.mkdir(exist_ok=True)
        config = mh.bridge_config(workdir / "mqtt.yaml", self.broker, self.redis.url(), metrics_port=port,
                                  **{"quiet_time": QUIET, "attributes_after": AFTER, "keepalive": 5, **settings})
        bridge = mh.BridgeProcess(config, self.env, workdir / "bridge.log").start()
        self.bridges.append(bridge)
        wait_for(lambda: metric(port, "deer_worker_mqtt_connected") == 1.0, GENEROUS_BOUND, f"bridge {name} connected")
        return bridge, port

    def close(self) -> None:
        for bridge in self.bridges:
            bridge.stop(signal.SIGKILL)
        self.pool.stop()
        self.broker.stop(GENEROUS_BOUND)
        self.redis.stop("sigkill", GENEROUS_BOUND)


def metric(port: int, name: str, **labels) -> float | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=GENEROUS_BOUND).read().decode()
    except OSError:
        return None
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{want}}}" if labels else name):
            return float(value)
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory, host_pace):
    stack = Stack(tmp_path_factory.mktemp("mqtt"), host_pace)
    stack.shared, stack.shared_port = stack.bridge("shared")
    yield stack
    stack.close()


@pytest.fixture
def recorder(stack):
    recorder = mh.Recorder(stack.broker.port)
    yield recorder
    recorder.close()


@pytest.fixture
def ring(stack):
    client = mh.connect(stack.broker.port, f"ring-mqtt-{time.monotonic_ns()}", clean=False)
    yield lambda device, ring_topic=mh.RING: mh.RingCamera(client, device, ring_topic=ring_topic)
    client.disconnect()
    client.loop_stop()


def results_of(recorder: mh.Recorder, camera: str) -> list[dict]:
    return [r for r in recorder.results() if r["camera_id"] == camera]


def test_an_image_gives_a_result_the_deer_state_and_discovery(stack, recorder, ring):
    camera = ring("cam1deer")
    taken = time.time() - 0.5
    camera.attributes("motion", taken)
    camera.image(DEER)
    [result] = recorder.wait(lambda: results_of(recorder, "cam1deer"), stack.result_timeout, "the result")
    assert result["status"] == "ok" and result["deer_detected"] and result["captured_at"] == taken
    assert result["job_id"].startswith("bridge-shared-") and "zones" in result
    assert recorder.wait(lambda: recorder.on("deer-worker/cam1deer/deer"), GENEROUS_BOUND, "ON") == [b"ON"]
    assert float(recorder.on("deer-worker/cam1deer/confidence")[-1]) == \
        max(d["confidence"] for d in result["detections"] if d["class_name"] == "deer")
    config = json.loads(recorder.on("homeassistant/binary_sensor/deer_worker_cam1deer/deer/config")[0])
    assert config["state_topic"] == "deer-worker/cam1deer/deer" and config["unique_id"] == "deer_worker_cam1deer_deer"
    assert config["availability_topic"] == "deer-worker/bridge/availability"
    sensor = json.loads(recorder.on("homeassistant/sensor/deer_worker_cam1deer/confidence/config")[0])
    assert sensor["state_topic"] == "deer-worker/cam1deer/confidence"
    assert metric(stack.shared_port, "deer_worker_mqtt_enqueued_total", priority="high") >= 1
    # OFF after the quiet time: not before it (measured from the ON), and within it plus a block wait
    on_at = next(at for t, p, _, at in recorder.messages if t == "deer-worker/cam1deer/deer" and p == b"ON")
    recorder.wait(lambda: recorder.on("deer-worker/cam1deer/deer")[1:], QUIET + 5, "OFF")
    off_at = next(at for t, p, _, at in recorder.messages if t == "deer-worker/cam1deer/deer" and p == b"OFF")
    assert off_at - on_at >= QUIET - 0.1
    # the states and discovery are retained: a Home Assistant that subscribes later sees them
    late = mh.Recorder(stack.broker.port)
    try:
        late.wait(lambda: late.on("deer-worker/cam1deer/deer") == [b"OFF"], GENEROUS_BOUND, "the retained OFF")
        assert late.on("deer-worker/bridge/availability") == [b"online"]
        assert late.on("homeassistant/binary_sensor/deer_worker_cam1deer/deer/config")
    finally:
        late.close()


def test_attributes_after_the_image_and_none_at_all(stack, recorder, ring):
    late = ring("cam2late")
    late.image(EMPTY)
    time.sleep(AFTER / 3)
    taken = time.time() - 1.0
    late.attributes("ding", taken)
    none = ring("cam2none")
    sent = time.time()
    none.image(EMPTY)
    [paired] = recorder.wait(lambda: results_of(recorder, "cam2late"), stack.result_timeout, "the late pair")
    [alone] = recorder.wait(lambda: results_of(recorder, "cam2none"), stack.result_timeout, "the lone image")
    assert paired["captured_at"] == taken and paired["status"] == "ok" and not paired["deer_detected"]
    assert sent - 0.5 <= alone["captured_at"] <= sent + 2.0  # receive time when no attributes came
    assert recorder.on("deer-worker/cam2none/deer") == []  # no deer: no ON


def test_identical_images_are_enqueued_once(stack, recorder, ring):
    camera = ring("cam3dup")
    before = metric(stack.shared_port, "deer_worker_mqtt_duplicates_total")
    for _ in range(3):
        camera.image(variant(EMPTY, 3))
    camera.image(variant(EMPTY, 4))
    recorder.wait(lambda: len(results_of(recorder, "cam3dup")) == 2, stack.result_timeout, "two results")
    wait_for(lambda: metric(stack.shared_port, "deer_worker_mqtt_duplicates_total") == before + 2, GENEROUS_BOUND,
             "duplicates")
    time.sleep(AFTER + 1)  # a third result would have come by now
    assert len(results_of(recorder, "cam3dup")) == 2


def test_bad_payloads_are_counted_by_kind_and_the_bridge_goes_on(stack, recorder, ring):
    camera = ring("cam4bad")
    port = stack.shared_port
    before = {kind: metric(port, "deer_worker_mqtt_dropped_total", kind=kind)
              for kind in ("empty_input", "unsupported_format", "payload_too_large", "bad_attributes")}
    camera.image(b"")
    camera.image(b"hello, not a picture")
    camera.image(DEER[:2] + b"\xff\xfe\xff\xf0" + b"\0" * MAX_BYTES + DEER[2:])  # over max_snapshot_bytes
    camera.image(b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + (50000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0" + b"\0" * 4
                 + b"\0\0\0\0IEND\xaeB`\x82")
    camera.attributes(None, raw=b"{not json")
    camera.attributes(None, raw=b"[1, 2, 3]")
    camera.image(EMPTY)  # and a good one after them
    # the PNG's header is sound: its size (2.5 Gpx) is the worker's to refuse (max_pixels), as a failed result
    bomb, good = recorder.wait(lambda: results_of(recorder, "cam4bad")[1:] and results_of(recorder, "cam4bad"),
                               stack.result_timeout, "the bomb's and the good image's results")
    assert (bomb["status"], bomb["error"]["kind"], good["status"]) == ("failed", "image_too_large", "ok")
    expected = {"empty_input": 1, "unsupported_format": 1, "payload_too_large": 1, "bad_attributes": 2}
    wait_for(lambda: all(metric(port, "deer_worker_mqtt_dropped_total", kind=k) == before[k] + n
                         for k, n in expected.items()), GENEROUS_BOUND,
             f"dropped counters {expected} over {before}")
    assert stack.shared.proc.poll() is None


def publish_stream(camera: mh.RingCamera, count: int, first: int, pause: float) -> None:
    for n in range(first, first + count):
        camera.image(variant(EMPTY, n))
        time.sleep(pause)


def restart_mid_stream(stack, recorder, ring, camera_id: str, stop, start) -> None:
    """5 snapshots, stop(), 5 more, start(), 5 more: all 15 results come, each once."""
    camera = ring(camera_id)
    publish_stream(camera, 5, 0, 0.05)
    recorder.wait(lambda: len(results_of(recorder, camera_id)) >= 1, stack.result_timeout, "the stream flowing")
    stop()
    publish_stream(camera, 5, 5, 0.05)  # held by ring-mqtt's client (broker down) or, unacked, by the bridge
    time.sleep(1.0)
    start()
    publish_stream(camera, 5, 10, 0.05)
    recorder.wait(lambda: len({r["job_id"] for r in results_of(recorder, camera_id)}) >= 15,
                  stack.result_timeout + GENEROUS_BOUND, "15 results")  # and a restart, reconnects
    time.sleep(AFTER + 1)
    results = results_of(recorder, camera_id)
    assert len(results) == len({r["job_id"] for r in results}) == 15  # each once


def test_a_broker_restart_mid_stream_loses_nothing(stack, recorder, ring):
    restart_mid_stream(stack, recorder, ring, "cam5broker", lambda: stack.broker.stop(GENEROUS_BOUND),
                       lambda: stack.broker.start(GENEROUS_BOUND))
    assert metric(stack.shared_port, "deer_worker_mqtt_reconnects_total", peer="mqtt") >= 1


def test_a_redis_restart_mid_stream_loses_nothing(stack, recorder, ring):
    restart_mid_stream(stack, recorder, ring, "cam6redis", lambda: stack.redis.stop("sigterm", GENEROUS_BOUND),
                       lambda: stack.redis.start(GENEROUS_BOUND))
    assert metric(stack.shared_port, "deer_worker_mqtt_reconnects_total", peer="redis") >= 1


def test_redis_lost_between_the_publish_and_the_save_repeats_nothing(tmp_path):
    """The interleaving behind a result published twice across a Redis restart, made to happen: the
    broker has acked a batch, then Redis stops (SIGTERM, AOF kept) before the bridge saves its position
    and the job ids. Once Redis is back the stream still holds that batch past the saved position:
    the bridge must go on from what it published, not read and publish the batch again."""
    from worker.config import WorkerConfig
    from worker.jobqueue.results import ModelInfo, build_message, encode
    from worker.serve.mqtt_bridge import Bridge
    from worker.serve.mqtt_config import BridgeConfig

    redis_server = RedisServer(tmp_path / "redis", conf=["appendonly yes", "appendfsync always"]).start(GENEROUS_BOUND)
    broker = mh.Mosquitto(tmp_path / "mosquitto").start(GENEROUS_BOUND)
    worker = WorkerConfig(redis_url=redis_server.url(), results_stream="deer:test:mqtt-save")
    bridge = Bridge(BridgeConfig(mqtt_url=broker.url(), client_id="bridge-save", metrics_port=0), worker)
    recorder = mh.Recorder(broker.port, filters=("deer-worker/+/result",))
    admin = redis_server.client()
    model = ModelInfo("demo", "1", "fp32", "f32", ("deer",))

    def result(job_id: str) -> None:
        admin.xadd(worker.results_stream, {"result": encode(build_message(
            status="ok", job_id=job_id, camera_id="camsave", captured_at=time.time(), worker="w", model=model))})

    deliveries, deliver = [], bridge.deliver

    def deliver_then_lose_redis(messages):
        delivered = deliver(messages)
        deliveries.append(delivered)
        if len(deliveries) == 1:
            redis_server.stop("sigterm", GENEROUS_BOUND)  # the broker has the batch; its save meets a stopped Redis
        return delivered

    bridge.deliver = deliver_then_lose_redis
    results = threading.Thread(target=bridge.results, daemon=True)
    try:
        bridge.client.connect("127.0.0.1", broker.port)
        bridge.client.loop_start()
        assert bridge.connected.wait(GENEROUS_BOUND)
        # no Nagle on the bridge's own socket (paho leaves it on): a small packet behind another waits for an ACK
        assert bridge.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        results.start()
        wait_for(lambda: admin.get(bridge.position_key), GENEROUS_BOUND, "the bridge's first position")
        result("save-1")
        wait_for(lambda: redis_server.proc.poll() is not None, GENEROUS_BOUND, "Redis stopped after the first delivery")
        time.sleep(0.5)  # the save has failed by now: the bridge is waiting for Redis
        redis_server.start(GENEROUS_BOUND)
        admin = redis_server.client()
        result("save-2")
        recorder.wait(lambda: {r["job_id"] for r in recorder.results()} >= {"save-1", "save-2"}, GENEROUS_BOUND,
                      "both results")
        time.sleep(1.5)  # a second copy would come within one XREAD block
        assert sorted(r["job_id"] for r in recorder.results()) == ["save-1", "save-2"]
        # and the save went through once Redis was back: a restarted bridge repeats nothing either
        wait_for(lambda: admin.zscore(bridge.published_key, "save-2") is not None, GENEROUS_BOUND, "the ids saved")
        assert admin.zscore(bridge.published_key, "save-1") is not None
    finally:
        bridge.stopping.set()
        results.join(GENEROUS_BOUND)  # a thread ending
        bridge.client.disconnect()
        bridge.client.loop_stop()
        recorder.close()
        broker.stop(GENEROUS_BOUND)
        redis_server.stop("sigkill", GENEROUS_BOUND)


def test_sigterm_turns_every_camera_off_then_says_offline(stack, recorder, ring):
    bridge, _ = stack.bridge("sigterm", output_prefix="deer-stop", ring_topic="ring-stop", quiet_time=600,
                             publish_other_results=False, discovery_prefix="ha-stop")
    camera = ring("cam7stop", ring_topic="ring-stop")
    camera.image(variant(DEER, 7))
    recorder.wait(lambda: recorder.on("deer-stop/cam7stop/deer") == [b"ON"], stack.result_timeout, "ON")
    assert bridge.stop(signal.SIGTERM, GENEROUS_BOUND) == 0
    recorder.wait(lambda: recorder.on("deer-stop/bridge/availability")[-1:] == [b"offline"], GENEROUS_BOUND, "offline")
    states = [(t, p) for t, p, _, _ in recorder.messages if t in ("deer-stop/cam7stop/deer", "deer-stop/bridge/availability")]
    assert states[-2:] == [("deer-stop/cam7stop/deer", b"OFF"), ("deer-stop/bridge/availability", b"offline")]
    # only its own jobs (publish_other_results off): none of the shared bridge's cameras appeared here
    assert {t.split("/")[1] for t, *_ in recorder.messages if t.startswith("deer-stop/")} == {"cam7stop", "bridge"}


@pytest.mark.slow  # the default run's budget; run with -m slow
def test_a_killed_bridge_is_marked_offline_by_its_last_will(stack, recorder):
    bridge, _ = stack.bridge("will", output_prefix="deer-will", ring_topic="ring-will")
    recorder.wait(lambda: recorder.on("deer-will/bridge/availability") == [b"online"], GENEROUS_BOUND, "online")
    killed = time.monotonic()
    bridge.stop(signal.SIGKILL)
    recorder.wait(lambda: recorder.on("deer-will/bridge/availability")[-1:] == [b"offline"], GENEROUS_BOUND,
                  "the Last Will")  # how soon it came is the assertion below
    assert time.monotonic() - killed <= 5 * 1.5 + 5  # keepalive 5 s: the broker gives up after 1.5x it


@pytest.mark.slow  # the default run's budget; run with -m slow
def test_the_broker_login_is_required_and_used(tmp_path, stack):
    secured = mh.Mosquitto(tmp_path / "secured", users={"bridge": "s3cret"}).start(GENEROUS_BOUND)
    try:
        def run(url: str) -> tuple[mh.BridgeProcess, int]:
            port = free_port()
            config = mh.bridge_config(tmp_path / f"{len(url)}.yaml", secured, stack.redis.url(), metrics_port=port,
                                      mqtt_url=url, client_id=f"bridge-auth-{len(url)}", ring_topic="ring-auth")
            return mh.BridgeProcess(config, stack.env, tmp_path / f"{len(url)}.log").start(), port

        wrong, wrong_port = run(secured.url("bridge", "wrong"))
        right, right_port = run(secured.url("bridge", "s3cret"))
        wait_for(lambda: metric(right_port, "deer_worker_mqtt_connected") == 1.0, GENEROUS_BOUND,
                 "the right login connected")
        wait_for(lambda: "not authorised" in wrong.log().lower() or "refused" in wrong.log().lower(), GENEROUS_BOUND,
                 "the wrong login refused")
        assert metric(wrong_port, "deer_worker_mqtt_connected") == 0.0 and "s3cret" not in right.log()
        wrong.stop(timeout=GENEROUS_BOUND), right.stop(timeout=GENEROUS_BOUND)
    finally:
        secured.stop(GENEROUS_BOUND)


def make_ca_and_server_cert(folder: Path, name: str = "ca") -> TlsFiles:
    """A private CA made here (openssl) and a certificate for 127.0.0.1 / localhost signed by it."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN=deer-test-{name}")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", f"{name}.pem", "-CAkey", f"{name}.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return TlsFiles(ca=folder / f"{name}.pem", cert=folder / "server.pem", key=folder / "server.key")


def test_mqtts_with_a_private_ca_and_a_login_round_trips_and_a_wrong_ca_is_refused(tmp_path, stack):
    tls = make_ca_and_server_cert(tmp_path / "pki")
    stranger = make_ca_and_server_cert(tmp_path / "other", "other-ca").ca  # a CA that did not sign the broker
    broker = mh.Mosquitto(tmp_path / "mosquitto", tls=tls, users={"bridge": "s3cret", "ha": "ha-pass"}).start(
        GENEROUS_BOUND)
    url = broker.url("bridge", "s3cret")
    assert url.startswith("mqtts://")

    def bridge(name: str, ca: Path) -> tuple[mh.BridgeProcess, int]:
        port = free_port()
        config = mh.bridge_config(tmp_path / name / "mqtt.yaml", broker, stack.redis.url(), metrics_port=port,
                                  mqtt_url=url, mqtt_ca_file=str(ca), client_id=f"bridge-{name}",
                                  ring_topic="ring-tls", output_prefix="deer-tls", discovery=False)
        return mh.BridgeProcess(config, stack.env, tmp_path / name / "bridge.log").start(), port

    (tmp_path / "wrong").mkdir(), (tmp_path / "right").mkdir()
    wrong, _ = bridge("wrong", stranger)
    right, port = bridge("right", tls.ca)
    recorder = mh.Recorder(broker.port, filters=("deer-tls/+/result",), user="ha", password="ha-pass", ca=tls.ca)
    ring_client = mh.connect(broker.port, "ring-tls", clean=False, user="ha", password="ha-pass", ca=tls.ca)
    try:
        wait_for(lambda: metric(port, "deer_worker_mqtt_connected") == 1.0, GENEROUS_BOUND,
                 "the mqtts bridge connected")
        mh.RingCamera(ring_client, "cam8tls", ring_topic="ring-tls").image(variant(DEER, 8))
        [result] = recorder.wait(lambda: results_of(recorder, "cam8tls"), stack.result_timeout, "the result over TLS")
        assert result["status"] == "ok" and result["job_id"].startswith("bridge-right-")
        # the wrong CA: refused at start, one line naming the broker and the CA file, exit 2, no traceback
        assert wrong.proc.wait(GENEROUS_BOUND) == 2  # starts, is refused, exits
        lines = [line for line in wrong.log().splitlines() if line.strip()]
        [line] = [line for line in lines if "not trusted" in line]
        assert "other-ca.pem" in line and f"127.0.0.1:{broker.port}" in line and "s3cret" not in line
        assert "Traceback" not in wrong.log() and not any(line.startswith("  File ") for line in lines)
        assert "s3cret" not in right.log()
    finally:
        ring_client.disconnect()
        ring_client.loop_stop()
        recorder.close()
        right.stop(signal.SIGKILL), wrong.stop(signal.SIGKILL)
        broker.stop(GENEROUS_BOUND)


@pytest.mark.slow
def test_a_burst_of_200_over_4_cameras_with_a_worker_killed_is_published_once_each(tmp_path, host_pace):
    """200 snapshots through the bridge while one of two workers is SIGKILLed mid-burst: every
    snapshot's result is published on MQTT exactly once (counted by job id), none lost."""
    redis_server = RedisServer(tmp_path / "redis", conf=["appendonly yes"]).start(GENEROUS_BOUND)
    broker = mh.Mosquitto(tmp_path / "mosquitto").start(GENEROUS_BOUND)
    env = worker_env(redis_server.url(), queue=QUEUE, batch="4", max_age=3600.0, job_timeout=30)
    pool = Pool(env, workers=2, log_file=tmp_path / "worker.log").start()
    port = free_port()
    config = mh.bridge_config(tmp_path / "mqtt.yaml", broker, redis_server.url(), metrics_port=port,
                              attributes_after=0.2, client_id="bridge-burst")
    bridge = mh.BridgeProcess(config, env, tmp_path / "bridge.log").start()
    recorder = mh.Recorder(broker.port, filters=("deer-worker/+/result",))
    ring_client = mh.connect(broker.port, "ring-burst", clean=False)
    try:
        wait_for(lambda: metric(port, "deer_worker_mqtt_connected") == 1.0, GENEROUS_BOUND, "the bridge connected")
        cameras = [mh.RingCamera(ring_client, f"burst{i}") for i in range(4)]
        for n in range(200):
            camera = cameras[n % 4]
            camera.attributes("motion" if n % 10 == 0 else "interval", time.time())
            camera.image(variant(DEER if n % 3 == 0 else EMPTY, n))
            time.sleep(0.01)
            if n == 60:
                victim = wait_for(lambda: pool.children(), GENEROUS_BOUND, "the pool's workers")[0]
                os.kill(victim, signal.SIGKILL)
        timeout = 120 + 20 * host_pace.load_s + 200 * host_pace.batch_s
        recorder.wait(lambda: len({r["job_id"] for r in recorder.results()}) >= 200, timeout, "200 results")
        time.sleep(5)  # a second copy of any result would have come by now
        results = recorder.results()
        ids = [r["job_id"] for r in results]
        assert len(ids) == len(set(ids)) == 200, (len(ids), len(set(ids)))
        assert metric(port, "deer_worker_mqtt_enqueued_total", priority="high") + \
            metric(port, "deer_worker_mqtt_enqueued_total", priority="normal") == 200
        assert {r["camera_id"] for r in results} == {f"burst{i}" for i in range(4)}
    finally:
        ring_client.disconnect()
        recorder.close()
        bridge.stop(signal.SIGKILL)
        pool.stop()
        broker.stop(GENEROUS_BOUND)
        redis_server.stop("sigkill", GENEROUS_BOUND)
