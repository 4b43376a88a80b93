"""Redis restarts under load (short version of benchmarks/reliability/redis_restart.py, same code):
a persistent redis-server of the test's own (appendonly yes, appendfsync always, data dir in tmp)
restarted on the same port and dir while a 2-worker pool and a producer run. Workers must be
finishing jobs again within 5 s of Redis being back, and every job Redis acknowledged must be
accounted for."""

from __future__ import annotations

import pytest

from relsupport import harness, skip_unless_selected  # noqa: F401 - harness puts the scripts on sys.path

import redis_restart  # noqa: E402


def _check(report: dict, restarts: int, caught_up_within: float) -> None:
    assert report["restarts"] == restarts
    assert report["all_ended"] and report["unaccounted"] == {} and report["lost_acknowledged"] == []
    assert report["reconnect_s"]["max"] <= 5.0, report["reconnect_s"]
    assert max(report["acked_before_ended_s"]) <= caught_up_within, report["acked_before_ended_s"]
    assert report["started_registry_left"] == 0 and report["pool_exit"] == 0
    assert report["outcomes"].get("ok", 0) > 0


# A quick clean restart, and a 10 s crash: long enough that RQ's old 60 s reconnect backoff kept
# workers away for > 5 s after Redis was back.
@pytest.mark.parametrize("how, down", [("sigterm", 1.0), ("sigkill", 10.0)])
def test_workers_come_back_after_a_redis_restart_and_nothing_acknowledged_is_lost(tmp_path, how, down):
    report = redis_restart.run_restarts(1, workdir=tmp_path, how=how, down=down, interval=5, rate=20)
    print(report)
    # After a clean stop, jobs in flight come back when their worker reconnects, not after their TTL
    # (20 s). A crash can also orphan a job between a worker's LMOVE and its reply: the next maintenance
    # passes (10 s apart) requeue it, where RQ alone took over 60 s.
    _check(report, 1, 10.0 if how == "sigterm" else 40.0)


@pytest.mark.slow
def test_twenty_restarts(request, tmp_path):
    skip_unless_selected(request)
    _check(redis_restart.run_restarts(20, workdir=tmp_path, how="sigterm"), 20, 10.0)
