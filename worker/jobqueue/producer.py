"""The producer side: enqueue snapshot jobs, refusing before Redis what a worker would refuse.

By default the JPEG/PNG bytes go to their own Redis key (`deer:snap:<id>`, with a TTL that outlives
the job's queue time and retries) and the job carries only the key: RQ re-serializes and
re-compresses a job's data whenever it saves the job, so inline base64 costs time on every job.
"""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry
from rq.job import Job

from worker import constants as C
from worker.errors import EnqueueUnconfirmedError, PayloadError
from worker.inference.imagecodec import read_header
from worker.jobqueue.contract import SnapshotJob, job_lifetime, parse_payload, snapshot_bytes
from worker.jobqueue.connections import SERIALIZER

PRIORITIES = ("normal", "high")


def enqueue_snapshot(connection: redis.Redis, snapshot: bytes | str | Path, camera_id: str, *,
                     captured_at: float | None = None, queue: str = C.DEFAULT_QUEUE, job_id: str | None = None,
                     model: str | None = None, by_path: bool = False, inline: bool = False,
                     max_snapshot_bytes: int = C.DEFAULT_MAX_SNAPSHOT_BYTES,
                     job_timeout: int = C.DEFAULT_JOB_TIMEOUT, result_ttl: int = C.DEFAULT_RESULT_TTL,
                     failure_ttl: int = C.DEFAULT_FAILURE_TTL, queued_ttl: int = C.DEFAULT_QUEUED_TTL,
                     retries: int = C.DEFAULT_RETRIES, priority: str = "normal", conf: float | None = None,
                     classes: list[str] | tuple[str, ...] | None = None,
                     camera_settings: dict[str, Any] | None = None, max_age: float | None = None,
                     durable: bool = False, wait_replicas: int = 1,
                     wait_timeout_ms: int = C.DEFAULT_WAIT_TIMEOUT_MS) -> Job:
    """Enqueue one snapshot (bytes or a file). The bytes go under a Redis key by default; inline=True
    puts them in the job as base64; by_path=True sends only the file path (same-host workers).

    priority="high" puts the job at the front of the one queue (motion, doorbell, on-demand snapshots
    overtake a backlog of interval ones) - one queue, so RQ keeps the intermediate list recovery reads.
    conf, classes, camera_settings (an override of the camera's zones.yaml entry) and max_age are the
    job's own settings: using any makes the payload version 2, which only upgraded workers accept.

    durable=True (several hosts, Redis Sentinel): return only once `wait_replicas` replicas hold the job
    (Redis WAIT, at most wait_timeout_ms); else raise EnqueueUnconfirmedError with the job id. Enqueueing
    that id again is idempotent: an existing job is confirmed, not enqueued twice."""
    if durable:
        job_id = job_id or uuid.uuid4().hex  # known before Redis answers, so an unconfirmed job can be retried
        if _exists(connection, job_id):  # a retry of an enqueue that was not confirmed
            confirm_replicated(connection, job_id, wait_replicas, wait_timeout_ms)
            return Job.fetch(job_id, connection=connection, serializer=SERIALIZER)
    if priority not in PRIORITIES:
        raise PayloadError(f"priority: expected one of {', '.join(PRIORITIES)}, got {priority!r}")
    captured_at = time.time() if captured_at is None else captured_at
    own = {"conf": conf, "classes": tuple(classes) if classes is not None else None, "camera": camera_settings,
           "max_age": max_age}
    data = None
    if by_path:
        job = SnapshotJob(camera_id, captured_at, None, str(Path(snapshot).resolve()), job_id, model, **own)
    else:
        data = snapshot if isinstance(snapshot, bytes) else Path(snapshot).read_bytes()
        if inline:
            job = SnapshotJob(camera_id, captured_at, base64.b64encode(data).decode("ascii"), None, job_id, model,
                              **own)
        else:
            key = f"{C.SNAPSHOT_KEY_PREFIX}{uuid.uuid4().hex}"
            job = SnapshotJob(camera_id, captured_at, None, None, job_id, model, snapshot_key=key, **own)
    payload = job.to_payload()
    parsed = parse_payload(payload, max_snapshot_bytes=max_snapshot_bytes)  # the worker's own checks
    if data is not None:
        read_header(snapshot_bytes(parsed, max_snapshot_bytes=max_snapshot_bytes, fetch_key=lambda _: data))
    rq_queue = Queue(queue, connection=connection, serializer=SERIALIZER)
    # One MULTI/EXEC round trip (RQ opens the transaction): the job, its snapshot and the camera's
    # newest-snapshot marker become visible together, so no worker sees a job without its bytes.
    with connection.pipeline() as pipe:
        rq_job = rq_queue.enqueue(
            C.JOB_FUNCTION, payload, job_id=job_id, job_timeout=job_timeout, result_ttl=result_ttl,
            failure_ttl=failure_ttl, ttl=queued_ttl, retry=Retry(max=retries) if retries else None,
            description=f"snapshot {camera_id}", at_front=priority == "high", pipeline=pipe)
        if parsed.snapshot_key is not None:
            # Outlives the longest the job can wait and be retried; the worker deletes it when the job ends.
            pipe.set(parsed.snapshot_key, data,
                     ex=job_lifetime(queued_ttl=queued_ttl, retries=retries, job_timeout=job_timeout))
        pipe.hset(C.LATEST_KEY, camera_id, f"{captured_at}|{rq_job.id}")
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not durable:
                raise
            raise EnqueueUnconfirmedError(f"job {rq_job.id}: Redis went away during the enqueue ({exc}); "
                                          "enqueue the same job id again", rq_job.id) from exc
    if durable:
        confirm_replicated(connection, rq_job.id, wait_replicas, wait_timeout_ms)
    return rq_job


def _exists(connection: redis.Redis, job_id: str) -> bool:
    try:
        return Job.exists(job_id, connection=connection)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EnqueueUnconfirmedError(f"job {job_id}: Redis unreachable ({exc}); enqueue it again", job_id) from exc


def confirm_replicated(connection: redis.Redis, job_id: str, replicas: int, timeout_ms: int) -> None:
    """WAIT for `replicas` replicas to hold everything written before; EnqueueUnconfirmedError if not.

    WAIT covers what its own connection wrote, and a pool may hand out another connection than the one
    that enqueued: a write on this connection (the fence key) comes after the job in the replication
    stream, so acknowledging it acknowledges the job."""
    try:
        with connection.pipeline(transaction=False) as pipe:
            pipe.set(C.ENQUEUE_FENCE_KEY, job_id, px=60_000)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            acknowledged = pipe.execute()[-1]
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EnqueueUnconfirmedError(f"job {job_id}: Redis went away before a replica confirmed it ({exc}); "
                                      "enqueue the same job id again", job_id) from exc
    if acknowledged < replicas:
        raise EnqueueUnconfirmedError(f"job {job_id}: {acknowledged} of {replicas} replica(s) confirmed it within "
                                      f"{timeout_ms} ms; enqueue the same job id again", job_id)
