#!/usr/bin/env python3
"""Redis round trips a job costs: our worker at batch 1 and batch 4, and RQ's own SimpleWorker.

A round trip is one connection checkout from the worker connection's pool: one per command or pipeline
sent (tests/jobqueue/test_consumer.py counts the same way and fails above 9 a job at batch 1 and 6 at
batch 4). Per job = (checkouts for N jobs - checkouts for 1 job) / (N - 1), so the worker's start and
end (registration, the last empty dequeue) are left out. RQ's SimpleWorker runs jobs of the same
payload whose function only GETs and DELetes the snapshot key (what our job needs from Redis beyond
RQ's own bookkeeping): RQ's per-job cost with no inference. Snapshots: the demo 640x360 sample under a
Redis key, as producers send them; the demo INT8 model, f32 inference. Against an embedded
redis-server, or --redis URL (its db is flushed).

    .venv/bin/python benchmarks/round_trips.py [--jobs 21] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402
from rq.job import get_current_job  # noqa: E402

from worker.cameras import parse_camera_book  # noqa: E402
from worker.config import WorkerConfig  # noqa: E402
from worker.jobqueue.rq_compat import subscribe_polling  # noqa: E402
from worker.constants import DEFAULT_RESULTS_STREAM  # noqa: E402
from worker.jobqueue.connections import SERIALIZER  # noqa: E402
from worker.jobqueue.consumer import DeerWorker  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402
from worker.evaluation.host import host_line  # noqa: E402
from worker.tools.embedded import embedded_redis  # noqa: E402

QUEUE = "bench-round-trips"
SNAPSHOT = ROOT / "models" / "demo" / "samples" / "day_640x360_deer.jpg"
INT8_MODEL = ROOT / "models" / "demo" / "deer-yolo26n_int8_openvino_model"


@contextmanager
def counting_round_trips(conn: redis.Redis) -> Iterator[Callable[[], int]]:
    """While inside, counts `conn`'s connection checkouts (one per command or pipeline sent); yields
    a function returning the count so far."""
    pool, count = conn.connection_pool, [0]
    real = pool.get_connection

    def counting(*args, **kwargs):
        count[0] += 1
        return real(*args, **kwargs)

    pool.get_connection = counting
    try:
        yield lambda: count[0]
    finally:
        del pool.get_connection  # the class's method again


def plain_job(payload: dict) -> int:
    """RQ's side of the comparison: the Redis work our job needs beyond RQ (GET and DEL its snapshot)."""
    conn = get_current_job().connection
    key = payload["snapshot"]["key"]
    size = len(conn.get(key) or b"")
    conn.delete(key)
    return size


def _enqueue(conn: redis.Redis, jobs: int) -> None:
    data = SNAPSHOT.read_bytes()
    for i in range(jobs):
        enqueue_snapshot(conn, data, f"cam{i}", queue=QUEUE)


def ours(url: str, detector, jobs: int) -> int:
    """Round trips of a burst DeerWorker over `jobs` fresh jobs."""
    conn = redis.Redis.from_url(url)
    _enqueue(conn, jobs)
    config = WorkerConfig(redis_url=url, queue=QUEUE, metrics_port=0)
    worker = DeerWorker([Queue(QUEUE, connection=conn, serializer=SERIALIZER)], connection=conn, detector=detector,
                        cameras=parse_camera_book({}), config=config, name=f"bench-{time.monotonic_ns()}")
    with counting_round_trips(conn) as count:
        worker.work(burst=True)
        return count()


class _SimpleWorker(SimpleWorker):
    """RQ's SimpleWorker, its worker-channel thread polling as ours does: RQ's 60 s poll can hold its
    teardown for a minute (redis-py 8.2 joins that thread). The poll itself sends no command."""

    def subscribe(self) -> None:
        subscribe_polling(self)


def rq_simple_worker(url: str, jobs: int) -> int:
    """Round trips of RQ's burst SimpleWorker over `jobs` fresh jobs of plain_job, same payloads."""
    conn = redis.Redis.from_url(url)
    data, queue = SNAPSHOT.read_bytes(), Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    for i in range(jobs):
        job = enqueue_snapshot(conn, data, f"cam{i}", queue=QUEUE)
        queue.enqueue("round_trips.plain_job", job.args[0])  # the same payload; RQ imports this module by name
        queue.remove(job.id)  # only RQ's jobs stay queued
        job.delete()
    worker = _SimpleWorker([queue], connection=conn, serializer=SERIALIZER, name=f"bench-rq-{time.monotonic_ns()}")
    with counting_round_trips(conn) as count:
        worker.work(burst=True)
        return count()


def per_job(run: Callable[[int], int], jobs: int) -> float:
    """(round trips for `jobs` - for 1) / (jobs - 1): start-up and shutdown left out."""
    one, many = run(1), run(jobs)
    return (many - one) / (jobs - 1)


def measure(url: str, jobs: int) -> dict:
    from worker.inference.detector import Detector

    conn = redis.Redis.from_url(url)
    out = {}
    for batch in ("1", "4"):
        detector = Detector(INT8_MODEL, batch=batch)
        conn.flushdb()
        out[f"ours_batch{batch}"] = per_job(lambda n: ours(url, detector, n), jobs)
        out[f"ours_batch{batch}_results"] = conn.xlen(DEFAULT_RESULTS_STREAM)  # both bursts' jobs, each ended
    conn.flushdb()
    out["rq_simple_worker"] = per_job(lambda n: rq_simple_worker(url, n), jobs)
    conn.flushdb()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=21, help="jobs in the long burst (per job = difference / (jobs - 1))")
    ap.add_argument("--redis", help="Redis URL, its db flushed (default: an embedded redis-server)")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args(argv)
    logging.getLogger("rq.worker").setLevel(logging.WARNING)  # RQ logs every job at INFO
    if args.jobs < 2:
        print("round_trips: --jobs must be >= 2", file=sys.stderr)
        return 2
    report = {"host": host_line(), "jobs": args.jobs, "snapshot": SNAPSHOT.name, "model": INT8_MODEL.name}
    print(report["host"], flush=True)
    if args.redis:
        report.update(measure(args.redis, args.jobs))
    else:
        with embedded_redis("redis-server") as (url, _):
            report.update(measure(url, args.jobs))
    print(f"Redis round trips a job: ours {report['ours_batch1']:.1f} at batch 1, {report['ours_batch4']:.1f} at "
          f"batch 4; RQ's SimpleWorker {report['rq_simple_worker']:.1f} (GET + DEL of the snapshot, no inference)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
