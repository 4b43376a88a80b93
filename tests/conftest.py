"""Shared fixtures. Integration tests use the real Redis at 127.0.0.1:6379 (db 13, flushed per test);
fakeredis serves only fast unit tests."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
FP32_MODEL = Path(os.environ.get("DEER_TEST_FP32_MODEL", DEMO / "deer-yolo26n_openvino_model"))
INT8_MODEL = DEMO / "deer-yolo26n_int8_openvino_model"
RAW_MODEL = DEMO / "deer-yolo26n_raw_openvino_model"
SAMPLES = DEMO / "samples"
DEMO_CONF = 0.25  # the demo model's working threshold (models/demo/zones.yaml); 0.55 is the user's model's
TEST_REDIS_URL = os.environ.get("DEER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


# The bound for a step with no model load and no inference in it (a local round trip, a process that
# starts, imports and exits, a thread that stops): generous by design, so a slow or loaded host never
# reaches it and only a hang does. Steps that load a model or serve jobs take HostPace.bound() instead.
GENEROUS_BOUND = 60.0

EXPORT_EXTRA = ("torch", "ultralytics")  # what the `reference` tests import (pip install -e '.[export]')


def pytest_runtest_setup(item):
    """`reference` tests compare against ultralytics: without the export extra they skip, never error."""
    if item.get_closest_marker("reference"):
        missing = [m for m in EXPORT_EXTRA if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"reference test: needs the export extra ({', '.join(missing)} not installed)")


# .ci/run sets this: there a missing tool is an error, never a quiet skip.
REQUIRE_TOOLS = os.environ.get("DEER_TEST_REQUIRE_TOOLS") == "1"


def tool(name: str, package: str) -> tuple[str | None, pytest.MarkDecorator]:
    """(path of an external tool, a skipif mark for the tests that need it). Missing: those tests skip
    on a developer's machine, and fail under .ci/run (DEER_TEST_REQUIRE_TOOLS=1), which installs it."""
    import shutil

    path = shutil.which(name)
    reason = f"{name} not installed (apt-get install {package}; .ci/run installs it)"
    if path is None and REQUIRE_TOOLS:
        pytest.fail(reason + " and DEER_TEST_REQUIRE_TOOLS=1", pytrace=False)
    return path, pytest.mark.skipif(path is None, reason=reason)


# /proc/cpuinfo of a two-core test CPU: .format(flags="avx2 ...") (the host line's and doctor's tests)
CPUINFO = """processor\t: 0
model name\t: Test CPU
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 {flags}

processor\t: 1
model name\t: Test CPU
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 {flags}
"""


def write_dataset(root: Path, yaml_text: str) -> Path:
    """A one-image data yaml (ds/images/val/a.jpg with one label) written as yaml_text; returns its path."""
    (root / "ds" / "images" / "val").mkdir(parents=True)
    (root / "ds" / "labels" / "val").mkdir(parents=True)
    (root / "ds" / "images" / "val" / "a.jpg").write_bytes(b"x")
    (root / "ds" / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    path = root / "data.yaml"
    path.write_text(yaml_text)
    return path


@contextmanager
def stop_handlers_kept():
    """SIGINT and SIGTERM handlers as they were before the block: a worker, RQ's work() or our stop
    request installs its own in this (pytest's) process."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def deer_samples() -> list[Path]:
    return sorted(SAMPLES.glob("*_deer.*"))


def empty_samples() -> list[Path]:
    return sorted(SAMPLES.glob("*_empty.*"))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (a decompression-bomb header) with one tiny IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(
        b"IEND", b"")


@pytest.fixture(scope="session")
def fp32_detector():
    from worker.inference.detector import Detector

    return Detector(FP32_MODEL, batch="4")


@pytest.fixture(scope="session")
def int8_detector():
    from worker.inference.detector import Detector

    return Detector(INT8_MODEL, batch="1")


def _redis_up(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_conn():
    """The real Redis (db 13), empty at the start of each test."""
    import redis

    if not _redis_up(TEST_REDIS_URL):
        pytest.fail(f"integration tests need Redis at {TEST_REDIS_URL} (.ci/run starts one)")
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll predicate() until it returns something truthy (returned); fail the test after timeout s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_jobs_of_every_outcome(conn, detector, queue: str) -> tuple[str, int]:
    """A real DeerWorker (burst, in this process) on real jobs against the real Redis, with the metrics
    and health server the worker process sets up (serve.service): ok jobs on a named and an unknown
    camera, one expired, one corrupt, one refused (a function that is not ours). Returns its /metrics
    as served over HTTP, and the number of ok jobs."""
    import base64
    import threading
    import time
    import urllib.request
    from dataclasses import replace

    from rq import Queue

    from worker.cameras import parse_camera_book
    from worker.config import WorkerConfig
    from worker.constants import JOB_FUNCTION
    from worker.jobqueue.connections import SERIALIZER
    from worker.jobqueue.consumer import DeerWorker
    from worker.jobqueue.producer import enqueue_snapshot
    from worker.serve.service import _start_health

    book = parse_camera_book({"default": {"confidence": DEMO_CONF}, "cameras": {"10cea9e4511f": {"name": "backyard"}}})
    config = replace(WorkerConfig(redis_url=TEST_REDIS_URL, queue=queue, metrics_port=free_port()), batch="4")
    ok_jobs = [enqueue_snapshot(conn, sample(name), cam, queue=queue)
               for name in ("night_640x360_deer.jpg", "day_1280x720_deer.png")
               for cam in ("10cea9e4511f", "unknown-cam")]
    enqueue_snapshot(conn, sample("day_640x360_deer.jpg"), "cam1", queue=queue, captured_at=time.time() - 600)
    rq_queue = Queue(queue, connection=conn, serializer=SERIALIZER)
    rq_queue.enqueue(JOB_FUNCTION, {"v": 1, "camera_id": "cam1",
                                    "snapshot": {"b64": base64.b64encode(sample("day_640x360_deer.jpg")[:999]).decode()}})
    rq_queue.enqueue("os.getcwd")  # not a deer job: refused unrun
    name = f"{queue}-test"
    metrics, server = _start_health(config, 0, detector, book, name, threading.Event())
    try:
        DeerWorker([rq_queue], connection=conn, detector=detector, cameras=book, config=config, metrics=metrics,
                   name=name).work(burst=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=GENEROUS_BOUND) as resp:
            return resp.read().decode(), len(ok_jobs)
    finally:
        server.stop()


_PACE_PROBE = """
import json, sys, time
started = time.monotonic()
from worker.inference.detector import Detector
detector = Detector(sys.argv[1], batch="4")
loaded = time.monotonic() - started
data = [open(p, "rb").read() for p in sys.argv[2:]][:4]
detector.detect_batch([(d, None) for d in data])
times = []
for _ in range(5):
    t = time.monotonic()
    detector.detect_batch([(d, None) for d in data])
    times.append(time.monotonic() - t)
print(json.dumps({"load_s": loaded, "batch_s": sorted(times)[len(times) // 2]}))
"""


@dataclass(frozen=True)
class HostPace:
    """This host's pace, measured when the session first asks: a fresh process importing the worker and
    loading (compiling, warming) the FP32 demo model (the one the reliability and pool tests serve), and the median of five batches of four samples.
    Deadlines and bounds that include a model load or job processing scale with these, so a host that is
    2-3x slower today (shared cores) gets 2-3x longer, and a fast host keeps tight bounds."""

    load_s: float
    batch_s: float

    def bound(self, *, loads: float = 0, batches: float = 0, base: float = GENEROUS_BOUND) -> float:
        """A deadline (s) for a step that loads `loads` models and serves `batches` batches of four (each a
        process start, a model compile, a queue round): `base` plus ten times what those cost on this host
        in this run, so a 2-3x slower day, a CPU hog or cold caches stay far inside it; only a hang is not."""
        return base + 10 * (loads * self.load_s + batches * self.batch_s)


@pytest.fixture(scope="session")
def host_pace() -> HostPace:
    images = [str(p) for p in sorted(SAMPLES.glob("*_640x360_*.jpg"))[:4]]  # what the reliability Producer sends
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _PACE_PROBE, str(FP32_MODEL), *images], cwd=ROOT,
                         capture_output=True, text=True, timeout=900, check=True).stdout
    pace = HostPace(**json.loads(out.strip().splitlines()[-1]))
    print(f"host pace: model load {pace.load_s:.2f} s, batch of 4 {pace.batch_s * 1e3:.0f} ms "
          f"(probe {time.monotonic() - started:.1f} s)")
    return pace
