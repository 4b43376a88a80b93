"""Shared fixtures. Integration tests use the real Redis at 127.0.0.1:6379 (db 13, flushed per test);
fakeredis serves only fast unit tests."""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
import zlib
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


EXPORT_EXTRA = ("torch", "ultralytics")  # what the `reference` tests import (pip install -e '.[export]')


def pytest_runtest_setup(item):
    """`reference` tests compare against ultralytics: without the export extra they skip, never error."""
    if item.get_closest_marker("reference"):
        missing = [m for m in EXPORT_EXTRA if importlib.util.find_spec(m) is None]
        if missing:
            pytest.skip(f"reference test: needs the export extra ({', '.join(missing)} not installed)")


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
