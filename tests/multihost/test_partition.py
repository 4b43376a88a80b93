"""A worker host cut off (its cable pulled) while it holds started jobs: the short version of
benchmarks/multihost/partition.py (one round, two jobs, settings that make the bound seconds).

The bound asserted is the one deploy/README.md documents: heartbeat TTL (job timeout + heartbeat_margin)
+ maintenance_interval + RQ's dequeue wait, plus the batch time the other host measured for itself
(the same test's own figure), not a speed goal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "multihost"))

import netlab  # noqa: E402
from conftest import tool  # noqa: E402
import partition  # noqa: E402

_, needs_ip = tool("ip", "iproute2")
pytestmark = [needs_ip, pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]
SETTINGS = partition.Settings()


@pytest.fixture(scope="module")
def cut_off_round(tmp_path_factory):
    return partition.one_round(tmp_path_factory.mktemp("partition"), SETTINGS, subnet=11)


def test_a_cut_off_hosts_jobs_run_elsewhere_within_the_documented_bound(cut_off_round):
    released = cut_off_round["released_s"]
    fresh = cut_off_round["fresh_jobs"]
    assert {cut_off_round["outcome_by_b"][job_id] for job_id in fresh} == {"ok"}, cut_off_round
    # Not before the heartbeat TTL (B must not take a live host's jobs early), within the bound plus B's
    # own batch time (release_window says why)
    earliest, latest = partition.release_window(cut_off_round, SETTINGS)
    assert all(earliest <= released[job_id] <= latest for job_id in fresh), (earliest, latest, cut_off_round)


def test_a_moved_job_older_than_max_age_ends_expired_apart_from_ok(cut_off_round):
    stale = cut_off_round["stale_job"]
    assert cut_off_round["outcome_by_b"][stale] == "expired", cut_off_round
    assert cut_off_round["expired_reason"][stale]["kind"] == "too_old"


def test_the_cut_off_hosts_late_publish_is_refused_one_ok_per_job(cut_off_round):
    assert cut_off_round["a_settled_after_reconnect"], cut_off_round
    assert all(n == 1 for job_id, n in cut_off_round["ok_per_job"].items() if job_id in cut_off_round["fresh_jobs"])
    assert cut_off_round["ok_per_job"][cut_off_round["stale_job"]] == 0
    assert "ok" not in cut_off_round["late_from_a"]


def test_the_long_runs_verdict_passes_this_round_and_names_each_broken_guarantee(cut_off_round):
    """partition.py's exit status (benchmarks/long_runs.py's verdict) comes from failed_checks."""
    assert partition.failed_checks([cut_off_round], SETTINGS) == []
    fresh, stale = cut_off_round["fresh_jobs"][0], cut_off_round["stale_job"]
    _, latest = partition.release_window(cut_off_round, SETTINGS)
    broken = {
        "after the cut, outside": {"released_s": {**cut_off_round["released_s"], fresh: latest + 1}},
        "not ok": {"outcome_by_b": {**cut_off_round["outcome_by_b"], fresh: "failed"}},
        "not expired too_old": {"outcome_by_b": {**cut_off_round["outcome_by_b"], stale: "ok"}},
        "more than one ok": {"ok_per_job": {**cut_off_round["ok_per_job"], fresh: 2}},
        "published an ok": {"late_from_a": ["ok"]},
        "had not ended": {"a_settled_after_reconnect": False},
    }
    for words, change in broken.items():
        (failure,) = partition.failed_checks([cut_off_round, {**cut_off_round, **change}], SETTINGS)
        assert failure.startswith("round 2: ") and words in failure, (words, failure)
