"""A worker SIGKILLed at each step of taking and running a batch loses no job.

The crash invariant, checked on Redis right after the crash and before any recovery: every job id is
in the queue, RQ's intermediate list or the started registry, or has already ended (finished or failed)
with its result. Then, as in production, the pool's recovery runs for the dead worker, which must leave
nothing started or orphaned, and a fresh worker ends every job ok.

crash_driver.POINTS lists the steps (including those of the batch taken ahead while one infers, and
published but not finished); a new step of the consumer loop is one more row there. Results are
published once: whatever the step, the channel and the stream carry exactly one ok per job id.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from rq.job import JobStatus
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from conftest import FP32_MODEL, GENEROUS_BOUND, sample
from crash_driver import BATCH, POINTS, go, launch
from relsupport import harness, private_redis  # noqa: F401 - fixture
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.constants import DEFAULT_JOB_TIMEOUT, DEFAULT_QUEUED_TTL, DEFAULT_RESULTS_CHANNEL
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.consumer import DeerWorker
from worker.jobqueue.contract import DeerJob
from worker.jobqueue.producer import enqueue_snapshot
from worker.jobqueue.recovery import recover_jobs, worker_name
from worker.jobqueue.rq_compat import intermediate_job_ids, started_entries

QUEUE = "crash-points"
JOBS = 2 * BATCH  # the crashed batch and one still queued behind it


def held_or_ended(conn, job_ids: list[str]) -> dict[str, str]:
    """Where each job is: queued / intermediate / started, or finished / failed with its result; "LOST"
    when none of these holds."""
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    queued = {raw.decode() for raw in conn.lrange(queue.key, 0, -1)}
    intermediate = set(intermediate_job_ids(queue))
    registry = StartedJobRegistry(QUEUE, connection=conn, serializer=SERIALIZER, job_class=DeerJob)
    started = {entry.job_id for entry in started_entries(registry)}
    where = {}
    for job_id in job_ids:
        raw = conn.hget(DeerJob.key_for(job_id), "status")
        status = raw.decode() if raw else None
        if status in (JobStatus.FINISHED.value, JobStatus.FAILED.value):
            job = DeerJob.fetch(job_id, connection=conn, serializer=SERIALIZER)
            where[job_id] = status if job.latest_result() is not None else "LOST"
        else:
            where[job_id] = ("queued" if job_id in queued else "intermediate" if job_id in intermediate
                             else "started" if job_id in started else "LOST")
    return where


def drained(channel) -> list[dict]:
    """Every message the subscription has received, read until it stays quiet for a second."""
    messages, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        raw = channel.get_message(timeout=0.2)  # None for the subscribe confirmation too
        if raw is not None:
            messages.append(json.loads(raw["data"]))
            quiet_since = time.monotonic()
    return messages


@pytest.mark.parametrize("point", list(POINTS))
def test_no_job_is_lost_whatever_step_a_worker_dies_at(private_redis, fp32_detector, point):
    conn = private_redis.client()
    started = time.monotonic()
    crashed = launch(private_redis.url(), QUEUE, FP32_MODEL, point)
    model_load = time.monotonic() - started
    # TTLs from this host's pace: ten times the model load (the slowest step here) measured just now,
    # never below the production defaults the test means to keep (a job orphaned for a minute would
    # vanish: recovery must be far faster). The model is loaded before any job exists, so no TTL races it.
    margin = int(10 * model_load)
    jobs = [enqueue_snapshot(conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE,
                             job_timeout=max(DEFAULT_JOB_TIMEOUT, margin), queued_ttl=max(DEFAULT_QUEUED_TTL, margin))
            for i in range(JOBS)]
    ids = [job.id for job in jobs]
    channel = conn.pubsub(ignore_subscribe_messages=True)
    channel.subscribe(DEFAULT_RESULTS_CHANNEL)
    stderr = go(crashed, timeout=margin + GENEROUS_BOUND)  # ten loads measured here, and the bound
    assert crashed.returncode == -signal.SIGKILL, stderr[-2000:]

    where = held_or_ended(conn, ids)
    assert "LOST" not in where.values(), (point, where)
    published_before, finished_before = conn.xlen(harness.STREAM), sum(s == "finished" for s in where.values())

    # What the pool does the moment it sees the death: nothing may stay started or orphaned after it
    # (a job left there would wait for the heartbeat-TTL fallback).
    recover_jobs(conn, [QUEUE], lambda name: name == worker_name(0, pid=crashed.pid))
    after = held_or_ended(conn, ids)
    assert set(after.values()) <= {"queued", "finished", "failed"}, (point, after)

    config = WorkerConfig(queue=QUEUE, metrics_port=0, max_age=600, batch=str(BATCH))
    DeerWorker([Queue(QUEUE, connection=conn, serializer=SERIALIZER)], connection=conn, detector=fp32_detector,
               cameras=parse_camera_book({}), config=config, name=f"fresh-{time.monotonic_ns()}").work(burst=True)
    acc = harness.account(conn, ids)
    assert acc.counts() == {"ok": JOBS}, (point, acc.outcome)
    assert conn.zcard(StartedJobRegistry(QUEUE, connection=conn).key) == 0
    assert not intermediate_job_ids(Queue(QUEUE, connection=conn))
    # Published once: a job published but not finished before the crash is run again, and its second
    # run publishes nothing; on the channel and the stream alike, exactly one ok per job id.
    streamed = [json.loads(fields[b"result"]) for _, fields in conn.xrange(harness.STREAM)]
    heard = drained(channel)
    for where_from, messages in (("stream", streamed), ("channel", heard)):
        assert sorted((m["job_id"], m["status"]) for m in messages) == sorted((i, "ok") for i in ids), \
            (point, where_from, Counter(m["job_id"] for m in messages))
    assert published_before >= finished_before, point


def test_an_orphan_no_death_explains_is_requeued_by_maintenance(private_redis, fp32_detector):
    """Redis crashing between a worker's LMOVE and its reply leaves the job in RQ's intermediate list with
    no worker dead to recover it: the second maintenance pass that still sees it unregistered requeues it."""
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
