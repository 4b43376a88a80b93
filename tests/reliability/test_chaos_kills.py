"""Worker crashes under load (short version of benchmarks/reliability/chaos.py, same code): SIGKILL a
random worker of a `deer-worker run --workers 2` pool mid-batch, repeatedly, under a steady producer.
Every job must end ok, expired or failed with a reason; none stuck in STARTED, none lost; the dead
worker's jobs are released by the pool's recovery (at once), not by the job-timeout fallback: released in
less than the job timeout. The job timeout scales with the batch pace measured on this host just before
(host_pace), never below 10 s, so a slow day moves both together."""

from __future__ import annotations

import pytest

from relsupport import assert_verdict_names_each_broken_check, harness  # noqa: F401 - harness: the scripts' path

import chaos  # noqa: E402

def job_timeout(pace) -> int:
    return max(10, round(40 * pace.batch_s))  # 10 s on a normal day here (a batch of four in ~0.16 s)


def _check(report: dict, kills: int) -> None:
    assert report["kills"] == kills and report["not_recovered"] == 0
    assert report["all_ended"] and report["unaccounted"] == {}, report["unaccounted"]
    assert report["started_registry_left"] == 0
    assert report["recovery_s"]["max"] < report["job_timeout_s"], report["recovery_s"]  # not the TTL fallback
    assert report["outcomes"].get("ok", 0) > 0
    assert report["workers_alive_at_end"] == 2 and report["pool_exit"] == 0
    assert sum(report["held_per_kill"]) >= kills  # every kill hit a worker holding jobs
    assert chaos.failed_checks(report, 2) == []  # the script's verdict agrees
    assert_verdict_names_each_broken_check(lambda r: chaos.failed_checks(r, 2), report, {
        "not ended": {"unaccounted": {"j": "missing"}}, "never released": {"not_recovered": 1},
        "left started": {"started_registry_left": 1}, "after a kill": {"recovery_s": {"max": 99}},
        "never replaced": {"not_restarted": 1}, "1 of 2 workers alive": {"workers_alive_at_end": 1}})


def test_three_kills_mid_batch_lose_nothing(tmp_path, host_pace):
    report = chaos.run_chaos(3, workdir=tmp_path, rate=25, job_timeout=job_timeout(host_pace), seed=6)
    print(report)
    _check(report, 3)


@pytest.mark.slow
def test_fifty_kills_mid_batch_lose_nothing(tmp_path, host_pace):
    report = chaos.run_chaos(50, workdir=tmp_path, rate=30, job_timeout=job_timeout(host_pace))
    print(report)
    _check(report, 50)
