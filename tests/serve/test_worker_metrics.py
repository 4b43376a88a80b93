"""Metrics of a real worker after real jobs: promtool-clean, and the counts add up to the jobs."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import urllib.request
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from conftest import DEMO_CONF, TEST_REDIS_URL, sample
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.jobqueue.connections import SERIALIZER
from worker.serve.health import HealthServer
from worker.serve.metrics import WorkerMetrics
from worker.jobqueue.producer import enqueue_snapshot
from worker.jobqueue.consumer import DeerWorker

QUEUE = "metrics-snapshots"


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_scrape_after_real_jobs_is_promtool_clean_and_counts_match(redis_conn, fp32_detector):
    book = parse_camera_book({"default": {"confidence": DEMO_CONF}, "cameras": {"10cea9e4511f": {"name": "backyard"}}})
    metrics = WorkerMetrics(camera_labels=book.labels, class_names=fp32_detector.class_names, queues=[QUEUE])
    config = replace(WorkerConfig(redis_url=TEST_REDIS_URL, queue=QUEUE, metrics_port=0), batch="4")
    ok_jobs = [enqueue_snapshot(redis_conn, sample(name), cam, queue=QUEUE)
               for name in ("night_640x360_deer.jpg", "day_1280x720_deer.png")
               for cam in ("10cea9e4511f", "unknown-cam")]
    enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE, captured_at=time.time() - 600)
    Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER).enqueue(
        "worker.tasks.detect_snapshot",
        {"v": 1, "camera_id": "cam1", "snapshot": {"b64": base64.b64encode(sample("day_640x360_deer.jpg")[:999]).decode()}})
    worker = DeerWorker([Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER)], connection=redis_conn,
                        detector=fp32_detector, cameras=book, config=config, metrics=metrics, name="metrics-test")
    worker.work(burst=True)
    with HealthServer(metrics, "127.0.0.1", 0, redis_ping=lambda: True, ready=lambda: True) as server:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    values = _samples(text)
    n_ok = len(ok_jobs)
    assert values[("deer_worker_job_duration_seconds_count", ())] == n_ok
    for stage in ("queue_wait", "decode", "preprocess", "inference", "postprocess"):
        assert values[("deer_worker_stage_duration_seconds_count", (("stage", stage),))] == n_ok
    assert values[("deer_worker_jobs_total", (("error_kind", "none"), ("outcome", "ok")))] == n_ok
    assert values[("deer_worker_jobs_total", (("error_kind", "too_old"), ("outcome", "expired")))] == 1
    assert values[("deer_worker_jobs_total", (("error_kind", "corrupt_image"), ("outcome", "failed")))] == 1
    assert values[("deer_worker_batch_size_count", ())] == n_ok
    deer_backyard = values[("deer_worker_detections_total", (("camera", "backyard"), ("class_name", "deer")))]
    deer_other = values[("deer_worker_detections_total", (("camera", "other"), ("class_name", "deer")))]
    assert deer_backyard >= 2 and deer_other >= 2  # every sample here has a deer, for both cameras
    assert values[("deer_worker_queue_depth", (("queue", QUEUE),))] == 0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (apt-get install prometheus); CI installs it")
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr
