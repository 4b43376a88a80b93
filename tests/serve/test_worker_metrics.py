"""Metrics of a real worker after real jobs: promtool-clean, and the counts add up to the jobs."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import serve_jobs_of_every_outcome, tool

PROMTOOL, _needs_promtool = tool("promtool", "prometheus")
PROMTOOL_MISSING = "promtool not installed (apt-get install prometheus; .ci/run installs it)"

QUEUE = "metrics-snapshots"


def _samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_scrape_after_real_jobs_is_promtool_clean_and_counts_match(redis_conn, fp32_detector):
    text, n_ok = serve_jobs_of_every_outcome(redis_conn, fp32_detector, QUEUE)
    values = _samples(text)
    assert values[("deer_worker_job_duration_seconds_count", ())] == n_ok
    for stage in ("queue_wait", "decode", "preprocess", "inference", "postprocess"):
        assert values[("deer_worker_stage_duration_seconds_count", (("stage", stage),))] == n_ok
    assert values[("deer_worker_jobs_total", (("error_kind", "none"), ("outcome", "ok")))] == n_ok
    assert values[("deer_worker_jobs_total", (("error_kind", "too_old"), ("outcome", "expired")))] == 1
    assert values[("deer_worker_jobs_total", (("error_kind", "corrupt_image"), ("outcome", "failed")))] == 1
    assert values[("deer_worker_jobs_total", (("error_kind", "forbidden_function"), ("outcome", "refused")))] == 1
    assert values[("deer_worker_batch_size_count", ())] == n_ok
    deer_backyard = values[("deer_worker_detections_total", (("camera", "backyard"), ("class_name", "deer")))]
    deer_other = values[("deer_worker_detections_total", (("camera", "other"), ("class_name", "deer")))]
    assert deer_backyard >= 2 and deer_other >= 2  # every sample here has a deer, for both cameras
    assert values[("deer_worker_queue_depth", (("queue", QUEUE),))] == 0
    if PROMTOOL is None:
        pytest.skip(PROMTOOL_MISSING)  # the counts above are checked all the same
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr
