"""The shadow model on the real Redis with the real demo models: a worker with a shadow serves every job ok
and identically to one without, publishes every result before the shadow runs, and its shadow metrics move
in a live scrape; under a backlog the shadow is skipped (counted); it never runs while a job waits; its
disagreements carry both answers; an exception in it is counted, never raised."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from dataclasses import replace
from types import SimpleNamespace

import pytest

from conftest import DEMO_CONF, GENEROUS_BOUND, SAMPLES, TEST_REDIS_URL, free_port, sample
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.constants import SHADOW_DISAGREEMENTS_STREAM, SHADOW_PENDING
from worker.serve.metrics import WorkerMetrics
from worker.serve.shadow import ShadowRunner

QUEUE, STREAM = "test-shadow", "test-shadow:results"
BOOK = parse_camera_book({"default": {"confidence": DEMO_CONF}, "cameras": {"cam1": {"name": "backyard"}}})
IMAGES = sorted(p.name for p in SAMPLES.iterdir())  # 8 snapshots, 2 of them empty scenes


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=GENEROUS_BOUND).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("deer_worker_shadow"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


class Timed:
    """The shadow detector, recording when each run started (wall clock, as results' finished_at)."""

    def __init__(self, detector):
        self.detector, self.spec, self.started = detector, detector.spec, []

    def detect(self, data, settings=None):
        self.started.append(time.time())
        return self.detector.detect(data, settings)


def _serve(conn, detector, shadow_detector=None) -> tuple[list[dict], ShadowRunner | None, dict]:
    """A burst DeerWorker (batch 1) with its metrics server on the 8 samples queued at once -> results in
    sample order, the shadow runner, and the shadow series of a live scrape."""
    from rq import Queue

    from worker.jobqueue.connections import SERIALIZER
    from worker.jobqueue.consumer import DeerWorker
    from worker.jobqueue.producer import enqueue_snapshot
    from worker.serve.service import _start_health

    conn.delete(STREAM)
    config = replace(WorkerConfig(redis_url=TEST_REDIS_URL, queue=QUEUE, results_stream=STREAM,
                                  metrics_port=free_port()), batch="1")
    jobs = [enqueue_snapshot(conn, sample(name), "cam1", queue=QUEUE) for name in IMAGES]
    metrics, server = _start_health(config, 0, detector, BOOK, "shadow-test", threading.Event())
    shadow = None
    if shadow_detector is not None:
        metrics.set_shadow_model(model=shadow_detector.spec.name, version=shadow_detector.spec.version)
        shadow = ShadowRunner(shadow_detector, 1.0, metrics=metrics, connection=conn, max_share=1.0)
    try:
        DeerWorker([Queue(QUEUE, connection=conn, serializer=SERIALIZER)], connection=conn, detector=detector,
                   cameras=BOOK, config=config, metrics=metrics, name="shadow-test", shadow=shadow).work(burst=True)
        scraped = _scrape(server.port)
    finally:
        server.stop()
    by_id = {m["job_id"]: m for m in (json.loads(f[b"result"]) for _, f in conn.xrange(STREAM))}
    return [by_id[j.id] for j in jobs], shadow, scraped


def test_a_worker_with_a_shadow_serves_identically_and_its_metrics_move_in_a_live_scrape(
        redis_conn, fp32_detector, int8_detector):
    plain, _, idle = _serve(redis_conn, fp32_detector)
    timed = Timed(int8_detector)
    shadowed, shadow, scraped = _serve(redis_conn, fp32_detector, timed)

    assert [r["status"] for r in plain] == ["ok"] * len(IMAGES) == [r["status"] for r in shadowed]
    assert [r["detections"] for r in shadowed] == [r["detections"] for r in plain]  # the shadow changed nothing
    assert {r["model"]["name"] for r in shadowed} == {fp32_detector.spec.name}
    # every result was published before the shadow ran (8 queued at once: one run of batches, then the shadow)
    assert timed.started and min(timed.started) >= max(r["finished_at"] for r in shadowed)

    # Under a backlog the shadow is skipped: it holds SHADOW_PENDING snapshots, the older ones are dropped.
    ran = len(timed.started)
    assert ran == shadow.ran == SHADOW_PENDING and len(IMAGES) > SHADOW_PENDING
    label = 'camera="backyard"'
    assert scraped[f'deer_worker_shadow_skipped_total{{{label},reason="backlog"}}'] == len(IMAGES) - ran
    outcomes = {k: v for k, v in scraped.items() if k.startswith("deer_worker_shadow_agreement_total{" + label)}
    assert sum(outcomes.values()) == ran and len(outcomes) == 4
    assert scraped[f"deer_worker_shadow_service_seconds_count{{{label}}}"] == ran
    assert scraped[f"deer_worker_shadow_matched_iou_count{{{label}}}"] >= 1  # the deer both models see
    assert scraped[f"deer_worker_shadow_confidence_delta_count{{{label}}}"] == \
        scraped[f"deer_worker_shadow_matched_iou_count{{{label}}}"]
    loaded = [k for k in scraped if k.startswith("deer_worker_shadow_model_loaded")]
    assert loaded == [f'deer_worker_shadow_model_loaded{{model="{int8_detector.spec.name}",version="'
                      f'{int8_detector.spec.version}"}}'] and scraped[loaded[0]] == 1
    # without a shadow the series are there at 0 (the dashboard's row draws 0, not "no data")
    assert idle[f'deer_worker_shadow_agreement_total{{{label},outcome="both"}}'] == 0
    assert not [k for k in idle if k.startswith("deer_worker_shadow_model_loaded")]


def _runner(detector, redis_conn, metrics=None, **kwargs):
    metrics = metrics or WorkerMetrics(camera_labels=["backyard"], class_names=["deer"], queues=[QUEUE])
    kwargs.setdefault("max_share", 1.0)  # no rest between runs unless the test is about it
    return ShadowRunner(detector, 1.0, metrics=metrics, connection=redis_conn, **kwargs), metrics


def _offer(runner, detector, image: str, primary_image: str | None = None) -> None:
    primary = detector.detect(sample(primary_image or image), BOOK.get("cam1")).detections
    runner.offer(job_id=f"job-{image}", camera_id="cam1", label="backyard", data=sample(image),
                 settings=BOOK.get("cam1"), primary=primary, primary_model="primary (v)",
                 primary_alert_classes=detector.spec.alert_classes)


def _value(metrics, name: str, labels: dict) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_the_shadow_never_runs_while_a_job_waits_and_drops_the_oldest_beyond_its_cap(redis_conn, fp32_detector):
    runner, metrics = _runner(fp32_detector, redis_conn, capacity=2)
    for image in IMAGES[:3]:
        _offer(runner, fp32_detector, image)
    assert _value(metrics, "deer_worker_shadow_skipped_total", {"camera": "backyard", "reason": "backlog"}) == 1
    assert runner.run_pending(lambda: True) == 0 and len(runner.pending) == 2  # a job waits: nothing runs
    waiting = iter([False, True])
    assert runner.run_pending(lambda: next(waiting)) == 1  # one piece, then a job arrived: it yields
    assert runner.run_pending(lambda: False) == 1 and not runner.pending


def test_the_shadow_takes_at_most_its_share_of_wall_time(redis_conn, fp32_detector):
    runner, _ = _runner(fp32_detector, redis_conn, max_share=0.5)  # rests as long as it ran
    for image in IMAGES[:2]:
        _offer(runner, fp32_detector, image)
    started = time.monotonic()
    assert runner.run_pending(lambda: False) == 1 and len(runner.pending) == 1  # resting: the next one waits
    took = time.monotonic() - started
    time.sleep(took * 1.5)
    assert runner.run_pending(lambda: False) == 1 and not runner.pending


def test_a_disagreement_is_streamed_with_both_answers(redis_conn, fp32_detector):
    runner, metrics = _runner(fp32_detector, redis_conn)
    # the primary answered for an empty scene, the shadow sees the deer snapshot: shadow_only
    _offer(runner, fp32_detector, "night_640x360_deer.jpg", primary_image="night_640x360_empty.jpg")
    _offer(runner, fp32_detector, "night_640x360_deer.jpg")  # the same model on the same snapshot agrees
    assert runner.run_pending(lambda: False) == 2
    [(_, entry)] = redis_conn.xrange(SHADOW_DISAGREEMENTS_STREAM)
    entry = {k.decode(): v.decode() for k, v in entry.items()}
    assert entry["outcome"] == "shadow_only" and entry["job_id"] == "job-night_640x360_deer.jpg"
    assert json.loads(entry["primary"]) == [] and json.loads(entry["shadow"])[0]["class_name"] == "deer"
    assert entry["primary_model"] == "primary (v)" and fp32_detector.spec.name in entry["shadow_model"]
    assert _value(metrics, "deer_worker_shadow_agreement_total", {"camera": "backyard", "outcome": "shadow_only"}) == 1
    assert _value(metrics, "deer_worker_shadow_agreement_total", {"camera": "backyard", "outcome": "both"}) == 1


def test_an_exception_in_the_shadow_is_counted_never_raised(redis_conn, fp32_detector):
    def broken(data, settings=None):
        raise RuntimeError("shadow runtime fell over")

    stand_in = SimpleNamespace(spec=fp32_detector.spec, detect=broken)
    runner, metrics = _runner(stand_in, redis_conn)
    _offer(runner, fp32_detector, "night_640x360_deer.jpg")
    runner.offer(job_id="j", camera_id="cam1", label="backyard", data=b"x", settings=None, primary=None,
                 primary_model="p", primary_alert_classes=("deer",))
    assert runner.run_pending(lambda: False) == 2
    assert _value(metrics, "deer_worker_shadow_errors_total", {"camera": "backyard"}) == 2
    assert _value(metrics, "deer_worker_shadow_service_seconds_count", {"camera": "backyard"}) == 0
    assert not redis_conn.exists(SHADOW_DISAGREEMENTS_STREAM)


def test_the_service_loads_the_configured_shadow_and_runs_without_a_broken_one(redis_conn, tmp_path):
    from conftest import INT8_MODEL
    from worker.serve.service import start_shadow

    metrics = WorkerMetrics(camera_labels=["backyard"], class_names=["deer"], queues=[QUEUE])
    config = WorkerConfig(redis_url=TEST_REDIS_URL, shadow_model=str(tmp_path / "missing_openvino_model"))
    assert start_shadow(config, BOOK, metrics, redis_conn, "w0") is None  # logged; the primary serves alone
    assert start_shadow(replace(config, shadow_model=""), BOOK, metrics, redis_conn, "w0") is None
    runner = start_shadow(replace(config, shadow_model=str(INT8_MODEL), shadow_sample=0.5), BOOK, metrics,
                          redis_conn, "w0")
    assert runner.sample == 0.5 and runner.detector.spec.name == "deer-yolo26n_int8"
    assert metrics.registry.get_sample_value("deer_worker_shadow_model_loaded",
                                             {"model": "deer-yolo26n_int8", "version": runner.detector.spec.version}) == 1
