"""A worker SIGKILLed at each distinct moment of its batch handling loses no job.

crash_driver.py runs a real DeerWorker that kills itself at the chosen point; then, as in
production, the pool's recovery runs for the dead worker and a fresh worker takes over. Every job
must end ok soon after, long before the heartbeat-TTL fallback (job timeout + 10 s) could help.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from rq.job import JobStatus

from conftest import FP32_MODEL, ROOT, sample
from relsupport import harness, private_redis  # noqa: F401 - fixture
from worker.jobqueue.producer import enqueue_snapshot
from worker.jobqueue.recovery import recover_jobs, worker_name

QUEUE = "crash-points"
DRIVER = ROOT / "tests" / "reliability" / "crash_driver.py"
JOB_TIMEOUT = 30  # the TTL fallback would need 40 s: far beyond what this test waits
POINTS = ["after_take", "after_register", "mid_inference", "mid_finalize", "after_publish"]


@pytest.mark.parametrize("point", POINTS)
def test_no_job_is_lost_whatever_moment_a_worker_dies(private_redis, point):
    conn = private_redis.client()
    data = sample("day_640x360_deer.jpg")
    # The producer's default queued TTL (60 s) stays: a job orphaned for a minute would vanish.
    jobs = [enqueue_snapshot(conn, data, f"cam{i}", queue=QUEUE, job_timeout=JOB_TIMEOUT) for i in range(8)]
    crashed = subprocess.Popen([sys.executable, str(DRIVER), private_redis.url(), QUEUE, str(FP32_MODEL), point],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    _, stderr = crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL, stderr[-2000:]
    dead = worker_name(0, pid=crashed.pid)

    # What the pool does the moment it sees the death, then a fresh worker (which also recovers at start).
    recover_jobs(conn, [QUEUE], lambda name: name == dead)
    started = time.monotonic()
    env = harness.worker_env(private_redis.url(), queue=QUEUE, job_timeout=JOB_TIMEOUT, max_age=600)
    fresh = subprocess.run([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--burst"], cwd=ROOT,
                           env=env, timeout=120, capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    took = time.monotonic() - started

    acc = harness.account(conn, [j.id for j in jobs])
    assert acc.counts() == {"ok": 8}, (point, acc.outcome)
    assert conn.zcard(f"rq:wip:{QUEUE}") == 0 and conn.llen(f"rq:queue:{QUEUE}:intermediate") == 0
    assert took < JOB_TIMEOUT  # recovered at once, not by the TTL fallback
    if point == "after_publish":  # at-least-once: the batch's results were published, then run again
        assert conn.xlen(harness.STREAM) > len(jobs)
    else:
        assert all(conn.hget(j.key, "status") == JobStatus.FINISHED.value.encode() for j in jobs)



def test_an_orphan_no_death_explains_is_requeued_by_maintenance(private_redis, fp32_detector):
    """Redis crashing between a worker's LMOVE and its reply leaves the job in RQ's intermediate list with
    no worker dead to recover it: the second maintenance pass that still sees it unregistered requeues it."""
    from rq import Queue

    from worker.cameras import parse_camera_book
    from worker.config import WorkerConfig
    from worker.jobqueue.connections import SERIALIZER
    from worker.jobqueue.consumer import DeerWorker

    conn = private_redis.client()
    job = enqueue_snapshot(conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    assert conn.lmove(queue.key, queue.intermediate_queue_key) == job.id.encode()  # the LMOVE that was persisted
    worker = DeerWorker([queue], connection=conn, detector=fp32_detector, cameras=parse_camera_book({}),
                        config=WorkerConfig(queue=QUEUE, metrics_port=0, max_age=600), name="maintainer")
    worker.run_maintenance_tasks()  # first sight: a live worker may be about to register it
    assert conn.lrange(queue.intermediate_queue_key, 0, -1) == [job.id.encode()]
    worker.run_maintenance_tasks()
    assert conn.lrange(queue.key, 0, -1) == [job.id.encode()] and conn.llen(queue.intermediate_queue_key) == 0
    worker.work(burst=True)
    assert harness.account(conn, [job.id]).outcome[job.id] == ("ok", "none")
