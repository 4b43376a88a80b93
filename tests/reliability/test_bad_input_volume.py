"""Bad input at volume (short version of benchmarks/reliability/bad_inputs.py, same code): 1000
generated inputs through the real queue to a real `deer-worker run` process."""

from __future__ import annotations

import pytest

from relsupport import assert_verdict_names_each_broken_check, harness  # noqa: F401 - harness: the scripts' path

import bad_inputs  # noqa: E402

KINDS = {"bad_payload", "corrupt_image", "empty_input", "unsupported_format", "image_too_large", "payload_too_large",
         "roi_outside_image", "snapshot_file", "model_unavailable", "not_json", "forbidden_function"}


def _check(report: dict) -> None:
    assert report["all_ended"] and not report["unaccounted"], report["unaccounted"]
    assert report["unexpected"] == [] and report["wrong_image_size"] == []
    assert report["worker_alive"] and report["worker_exit"] == 0 and report["crash_lines"] == []
    seen = {k.split(":", 1)[1] for k in report["outcomes"] if k.startswith("failed:")}
    assert seen == KINDS, KINDS ^ seen
    counted = report["metrics_jobs_total"]
    assert counted["failed"] == report["failed_jobs"] and counted["refused"] == report["refused_jobs"]
    assert counted["ok"] == report["ok_jobs"] and counted["expired"] == report["expired_jobs"]
    assert report["failed_jobs"] + report["refused_jobs"] + report["ok_jobs"] + report["expired_jobs"] == report["jobs"]
    assert bad_inputs.failed_checks(report) == []  # the script's verdict agrees
    assert_verdict_names_each_broken_check(bad_inputs.failed_checks, report, {
        "not ended": {"unaccounted": {"j": "missing"}}, "other than their case expects": {"unexpected": [{}]},
        "wrong image size": {"wrong_image_size": [{}]}, "crashed": {"worker_alive": False},
        "deer_worker_jobs_total": {"metrics_jobs_total": {**counted, "expired": counted["expired"] + 1}}})


def test_a_thousand_bad_inputs_fail_alone_with_their_reason(tmp_path, host_pace):
    # the bound for all jobs to end, counted from the worker ready: 1000 jobs in batches of four
    report = bad_inputs.run_bad_inputs(1000, workdir=tmp_path, seed=20261127, timeout=host_pace.bound(batches=1000 / 4))
    print({k: v for k, v in report.items() if k != "by_family"})
    _check(report)


@pytest.mark.slow
def test_ten_thousand_bad_inputs(tmp_path, host_pace):
    _check(bad_inputs.run_bad_inputs(10_000, workdir=tmp_path, seed=7, timeout=host_pace.bound(batches=10_000 / 4)))
