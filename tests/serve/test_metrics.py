"""WorkerMetrics: what a scrape shows after simulated jobs, linted by promtool."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import GENEROUS_BOUND, tool
from worker.constants import LATENCY_BUCKETS
from worker.errors import CorruptImageError
from worker.serve.metrics import MAX_ERROR_KINDS, OUTCOMES, STAGES, WorkerMetrics

PROMTOOL, needs_promtool = tool("promtool", "prometheus")
N_JOBS = 7


def make_metrics() -> WorkerMetrics:
    return WorkerMetrics(camera_labels=["front", "back"], class_names=["deer"], queues=["deer-snapshots"],
                         worker_name="test-0")


def simulate(metrics: WorkerMetrics, n: int = N_JOBS) -> None:
    """n jobs through every stage, batch sizes cycling 1..4, 0-2 deer each on camera "front"."""
    for i in range(n):
        metrics.job_started()
        stages = {s: 0.001 * (k + 1) + 0.0005 * i for k, s in enumerate(STAGES)}
        metrics.observe_job(stages=stages, total=sum(stages.values()), batch_size=1 + i % 4)
        metrics.count_job("ok")
        metrics.count_detections("front", ["deer"] * (i % 3))
        metrics.job_finished()


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


@needs_promtool
def test_exposition_passes_promtool_without_warnings():
    m = make_metrics()
    simulate(m)
    m.count_job("failed", "corrupt_image")
    m.count_job("expired", "expired")
    m.set_queue_depth("deer-snapshots", 3)
    m.set_model(model="deer-yolo26n", version="1", precision="int8", batch=4)
    m.set_ready(True)
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=m.exposition(), capture_output=True, timeout=GENEROUS_BOUND)
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done


@needs_promtool
def test_promtool_lint_can_fail():
    # The lint above is only worth something if promtool complains about a bad exposition.
    bad = b"# HELP deer_worker_jobs Jobs.\n# TYPE deer_worker_jobs counter\ndeer_worker_jobs 1\n"
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=bad, capture_output=True, timeout=GENEROUS_BOUND)
    assert done.returncode != 0 or done.stdout or done.stderr


def test_histograms_count_every_job_per_stage():
    m = make_metrics()
    simulate(m)
    for stage in STAGES:
        assert value(m, "deer_worker_stage_duration_seconds_count", stage=stage) == N_JOBS
    assert value(m, "deer_worker_job_duration_seconds_count") == N_JOBS
    assert value(m, "deer_worker_batch_size_count") == N_JOBS
    # batch sizes 1,2,3,4,1,2,3 -> sum 16, two jobs in batches of 1
    assert value(m, "deer_worker_batch_size_sum") == 16
    assert value(m, "deer_worker_batch_size_bucket", le="1.0") == 2


def test_latency_buckets_are_the_shared_ones():
    m = make_metrics()
    m.observe_job(stages={"inference": 0.039}, total=0.039, batch_size=1)
    les = sorted(float(dict(labels)["le"]) for (name, labels) in samples(m)
                 if name == "deer_worker_job_duration_seconds_bucket")
    assert les == sorted([*LATENCY_BUCKETS, float("inf")])
    assert value(m, "deer_worker_stage_duration_seconds_bucket", stage="inference", le="0.035") == 0
    assert value(m, "deer_worker_stage_duration_seconds_bucket", stage="inference", le="0.04") == 1
    assert value(m, "deer_worker_stage_duration_seconds_count", stage="decode") == 0


def test_known_series_exist_at_zero_before_any_job():
    s = samples(make_metrics())
    for stage in STAGES:
        assert s[("deer_worker_stage_duration_seconds_count", (("stage", stage),))] == 0
    assert s[("deer_worker_jobs_total", (("error_kind", "none"), ("outcome", "ok")))] == 0
    assert s[("deer_worker_detections_total", (("camera", "front"), ("class_name", "deer")))] == 0
    assert s[("deer_worker_queue_depth", (("queue", "deer-snapshots"),))] == 0
    assert s[("deer_worker_ready", ())] == 0
    assert s[("deer_worker_start_time_seconds", ())] > 1e9


def test_job_counter_by_outcome_and_kind():
    m = make_metrics()
    simulate(m)
    m.count_job("failed", "corrupt_image")
    m.count_job("failed", "corrupt_image")
    m.count_job("refused", "forbidden_function")
    m.count_job("expired", "expired")
    assert value(m, "deer_worker_jobs_total", outcome="ok", error_kind="none") == N_JOBS
    assert value(m, "deer_worker_jobs_total", outcome="failed", error_kind="corrupt_image") == 2
    assert value(m, "deer_worker_jobs_total", outcome="refused", error_kind="forbidden_function") == 1
    assert value(m, "deer_worker_jobs_total", outcome="expired", error_kind="expired") == 1


def test_labels_stay_bounded():
    m = make_metrics()
    m.count_job("failed", "a kind made from user input: /etc/passwd")
    m.count_job("failed", "")
    assert value(m, "deer_worker_jobs_total", outcome="failed", error_kind="other") == 2
    with pytest.raises(ValueError):
        m.count_job("exploded")
    with pytest.raises(ValueError):
        m.observe_job(stages={"infer": 0.01}, total=0.01, batch_size=1)  # the stage is "inference"
    with pytest.raises(ValueError):
        m.set_queue_depth("some-other-queue", 1)
    assert set(OUTCOMES) == {"ok", "failed", "expired", "refused"}


def test_error_kinds_are_code_identifiers_and_capped():
    m = make_metrics()
    m.count_job("failed", CorruptImageError.kind)
    m.count_job("expired", "too_old")
    m.count_job("failed", "JobTimeoutException")  # a class name when the exception has no kind
    assert value(m, "deer_worker_jobs_total", outcome="failed", error_kind="corrupt_image") == 1
    assert value(m, "deer_worker_jobs_total", outcome="expired", error_kind="too_old") == 1
    assert value(m, "deer_worker_jobs_total", outcome="failed", error_kind="job_timeout_exception") == 1
    for i in range(MAX_ERROR_KINDS + 10):
        m.count_job("failed", f"kind_{i}")
    kinds = {dict(labels)["error_kind"] for (name, labels) in samples(m) if name == "deer_worker_jobs_total"}
    assert len(kinds) == MAX_ERROR_KINDS + 1  # the cap, plus "other" for the overflow
    assert "other" in kinds and "corrupt_image" in kinds and f"kind_{MAX_ERROR_KINDS + 9}" not in kinds


def test_unknown_camera_and_class_fold_into_other():
    m = make_metrics()
    m.count_detections("front", ["deer", "deer"])
    m.count_detections("garage-cam-that-is-not-configured", ["deer", "raccoon"])
    assert value(m, "deer_worker_detections_total", camera="front", class_name="deer") == 2
    assert value(m, "deer_worker_detections_total", camera="other", class_name="deer") == 1
    assert value(m, "deer_worker_detections_total", camera="other", class_name="other") == 1
    cameras = {dict(labels)["camera"] for (name, labels) in samples(m) if name == "deer_worker_detections_total"}
    assert cameras == {"front", "back", "other"}


def test_gauges():
    m = make_metrics()
    m.set_queue_depth("deer-snapshots", 12)
    m.job_started(3)
    m.job_finished()
    m.set_ready(True)
    assert value(m, "deer_worker_queue_depth", queue="deer-snapshots") == 12
    assert value(m, "deer_worker_jobs_in_progress") == 2
    assert value(m, "deer_worker_ready") == 1
    m.set_ready(False)
    assert value(m, "deer_worker_ready") == 0


def test_set_model_replaces_the_previous_label_set():
    m = make_metrics()
    m.set_model(model="deer-yolo26n", version="1", precision="int8", batch=1)
    m.set_model(model="deer-yolo26n", version="2", precision="f32", batch=4)
    loaded = {labels: v for (name, labels), v in samples(m).items() if name == "deer_worker_model_loaded"}
    assert loaded == {(("batch", "4"), ("model", "deer-yolo26n"), ("precision", "f32"), ("version", "2")): 1}


def test_registries_are_per_instance():
    a, b = make_metrics(), make_metrics()
    simulate(a, 2)
    assert value(a, "deer_worker_job_duration_seconds_count") == 2
    assert value(b, "deer_worker_job_duration_seconds_count") == 0


def test_negative_durations_are_clamped():
    m = make_metrics()
    m.observe_job(stages={"queue_wait": -0.5}, total=0.01, batch_size=1)
    assert value(m, "deer_worker_stage_duration_seconds_sum", stage="queue_wait") == 0
