"""Soak, short version (benchmarks/reliability/soak.py runs the same code for 30 minutes): a 2-worker
pool at 80% of its measured capacity for 60 s after a 6 s capacity measurement (~75 s in all).

Checks: RSS growth < 5% and no file descriptor growth after the warm-up, no worker restart, every job
ends. The run lasts 60 s, or longer where the capacity measured at its start says the warm-up's jobs
would not leave AFTER_WARMUP seconds of samples (a host 2-3x slower today: up to ~2 min more). Settings, chosen after the 40 s version read 5.2% RSS growth once on this shared host:
- The RSS baseline is taken after 25 s *and* WARMUP_JOBS finished jobs, whichever comes later (the
  old run took it after 10 s). What a worker still has to grow into is per job (image sizes, batch
  shapes), so the warm-up counts jobs too: a slow or busy host does fewer per second.
- Each end of the comparison is the median of MEDIAN_OF one-second samples, not one sample, so a
  sample taken in the middle of a batch of four 1080p frames does not decide. fds are judged by their
  trend: a leak keeps growing, so the count must rise in both halves of the run (medians of its thirds);
  a descriptor that opened once near the end (a reconnect, seen on a busy host as 10 -> 11 in the
  last samples) is a step, not a leak.
The 5.2% was not reproduced: in six 60 s runs and the 30-minute run here, worker RSS stayed within
0.1 MB from the first sample after the capacity phase (which saturates the pool with full batches).
It can still fail for a leak, but only a fast one: the break leak-16kb-per-job (tests/mutations/
queue_breaks.py: each ok job keeps 16 KB) read 5.24% and 5.07% on 2026-11-30 (soaks at 58-60 jobs/s,
~1000 jobs a worker after the warm-up, RSS ~290 MB), just over the 5%: 16 KB a job is about the
smallest leak this run catches on this host; slower leaks are for the 30-minute run.

Service time is not asserted here: on this shared 2-core host a 35 s run cannot tell a slowdown of the
worker from one of the host (its speed moves 2-3x within a day), and speed goals are no CI assertion.
The windows' p50/p99 are printed; the 30-minute run (-m slow, and benchmarks/reliability/soak.py)
holds the last 5 minutes' p99 to the first's. Likewise the outcomes: every job ends ok or expired as
too old (at 80% of the capacity measured at the start, a host that slows down later expires jobs:
that is the worker doing its job), never failed, and at least one ends ok.
"""

from __future__ import annotations

import pytest

from relsupport import assert_verdict_names_each_broken_check, harness  # noqa: F401 - harness: the scripts' path

import soak  # noqa: E402

WARMUP_JOBS = 1000  # the whole pool, from the start of the soak
MEDIAN_OF = 5
WINDOW = 5  # s: 7 windows after the warm-up, ~500 jobs each


def _check(report: dict) -> None:
    assert report["all_ended"] and report["unaccounted"] == {} and not report["workers_restarted"]
    assert set(report["kinds"]) <= {"ok:none", "expired:too_old"} and report["outcomes"].get("ok", 0) > 0, \
        report["kinds"]
    workers = {pid: v for pid, v in report["processes"].items() if pid != "pool_parent"}
    assert all(v["samples"] >= 2 * MEDIAN_OF for v in workers.values()), report["processes"]  # two distinct ends
    assert report["max_rss_growth_pct"] < 5.0, report["processes"]
    assert report["max_fd_growth"] <= 0, report["processes"]
    # the script's verdict (its p99 check is for the long soak's 5-minute windows, not asserted here)
    assert_verdict_names_each_broken_check(soak.failed_checks, report, {
        "not ended": {"unaccounted": {"j": "missing"}}, "restarted": {"workers_restarted": True},
        "RSS grew": {"max_rss_growth_pct": 5.0}, "fds grew": {"max_fd_growth": 1}})


AFTER_WARMUP = 35  # s of samples after the warm-up: 7 windows, and 35 one-second samples per worker


def test_short_soak_at_80_percent_of_capacity(tmp_path):
    report = soak.run_soak(60, workdir=tmp_path, warmup=25, warmup_jobs=WARMUP_JOBS, window=WINDOW, capacity_s=6,
                           sample_every=1, median_of=MEDIAN_OF, after_warmup=AFTER_WARMUP)
    print(report)
    print("service ms per window: p50", report["p50_service_ms_per_window"], "p99", report["p99_service_ms_per_window"])
    print(f"max_rss_growth_pct {report['max_rss_growth_pct']}, max_fd_growth {report['max_fd_growth']}")  # last line
    _check(report)


@pytest.mark.slow
def test_thirty_minute_soak(tmp_path):
    report = soak.run_soak(30 * 60, workdir=tmp_path, warmup=120, window=300, capacity_s=15, median_of=5)
    print(report)
    _check(report)
    assert 0.90 <= report["p99_last_vs_first"] <= 1.10, report["p99_service_ms_per_window"]  # last 5 min vs first 5


def test_fd_growth_is_judged_by_its_trend_not_by_one_end():
    assert soak._fd_trend([10] * 30 + [11] * 5) == 0  # one descriptor opened near the end: a step
    assert soak._fd_trend([10] * 12 + [11] * 23) == 0  # ... or in the middle, and kept
    assert soak._fd_trend(list(range(10, 45))) >= 10  # one a second: a leak
    assert soak._fd_trend([10] * 10 + [11] * 10 + [12] * 10) == 1  # slow, but rising in both halves
