"""benchmarks/queue_bench.py's figures that README quotes: the PING timings of the transport floor and
--snapshot-kinds (what inline base64 costs against a key). The full options run in benchmarks; these
check what each part reports, against the real Redis (PING) and a real pool (slow)."""

from __future__ import annotations

import argparse
import sys

import pytest

from conftest import ROOT, TEST_REDIS_URL

sys.path.insert(0, str(ROOT / "benchmarks"))
import queue_bench  # noqa: E402


def test_ping_times_back_to_back_and_after_an_idle(redis_conn):
    ping = queue_bench.ping_times(TEST_REDIS_URL, 20, idle_ms=5.0)
    assert ping["pings"] == 20 and ping["idle_ms"] == 5.0
    # a round trip, not the idle: each PING after a 5 ms sleep is timed alone
    assert 0 < ping["back_to_back_p50"] < 5.0 and 0 < ping["after_idle_p50"] < 5.0


def test_an_unknown_snapshot_kind_is_one_line():
    args = argparse.Namespace(snapshot_kinds="key,jpeg", rounds=1)
    with pytest.raises(SystemExit, match="expected some of key, b64"):
        queue_bench.snapshot_kinds(TEST_REDIS_URL, args)


@pytest.mark.slow
def test_snapshot_kinds_run_key_and_b64_jobs_alike(redis_conn):
    args = argparse.Namespace(snapshot_kinds="key,b64", rounds=1, model=str(queue_bench.ROOT / "models/demo/"
                              "deer-yolo26n_int8_openvino_model"), latency_jobs=3, jobs=8)
    out = queue_bench.snapshot_kinds(TEST_REDIS_URL, args)
    for kind in ("key", "b64"):
        (run,) = out["runs"][kind]
        assert run["ok"] == 8 and run["e2e_p50_ms"] > run["service_p50_ms"] > 0 and run["jobs_per_s"] > 0
    assert out["b64_vs_key_jobs_per_s"] == out["median"]["b64"]["jobs_per_s"] / out["median"]["key"]["jobs_per_s"]


@pytest.mark.slow
def test_the_loop_without_inference_serves_the_backlog_and_reports_its_cpu_per_job(redis_conn):
    # B's per-job cost (--consumer-loop): the consumer loop with inference stubbed out serves every queued
    # job (decoded for real, ok with no detections) and reports its CPU and redis-server's, per job.
    out = queue_bench.noop_cpu_per_job(TEST_REDIS_URL, str(queue_bench.DEMO_MODEL), queue_bench.SNAPSHOT_360, n=12)
    assert out["jobs"] == 12 and out["ok"] == 12
    assert out["worker_cpu_s"] > 0 and out["redis_cpu_s"] >= 0
    assert out["noop_cpu_ms"] == pytest.approx((out["worker_cpu_s"] + out["redis_cpu_s"]) / 12 * 1e3)
