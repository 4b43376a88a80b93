"""Run a real DeerWorker that SIGKILLs itself at one chosen step of taking and running a batch.

    python crash_driver.py REDIS_URL QUEUE MODEL POINT

The driver loads the model, prints "ready" and waits for a line on stdin before it starts working, so
the test enqueues its jobs only once the model is loaded: no job TTL races a slow model load.

POINTS holds every step, in the order a batch goes through them; each is the function whose nth call
(counting from the start of the run) kills the process before or after it runs. A new step of the
consumer loop is one more row here (and in the test's list, which reads this table).
The crash is a real SIGKILL of this process; only where it happens is chosen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from rq.queue import Queue

import worker.jobqueue.consumer as consumer
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.jobqueue.connections import SERIALIZER, connect
from worker.jobqueue.recovery import worker_name
from worker.inference.build import build_detector

ROOT = Path(__file__).resolve().parents[2]
BATCH = 4  # the driver's batch size: the test queues two batches' worth


class Point(NamedTuple):
    owner: object  # the class or module whose attribute is wrapped
    name: str
    nth: int
    after: bool  # die after the call returns (else before it runs)


POINTS = {
    # the 1st job LMOVEd into RQ's intermediate list, nothing registered yet
    "after_dequeue": Point(consumer.DeerWorker, "execute_job", 1, after=False),
    **{f"after_drain_{n}": Point(consumer.DeerWorker, "dequeue_more", n, after=True)  # job n+1 taken, unregistered
       for n in range(1, BATCH)},
    **{f"after_register_{n}": Point(consumer.DeerWorker, "register_started", n, after=True)  # job n started
       for n in range(1, BATCH + 1)},
    "after_admit": Point(consumer.DeerWorker, "admit", BATCH, after=True),  # verdicts in, snapshots read
    "mid_inference": Point(consumer.DeerWorker, "infer", 1, after=False),
    # The preparation thread, while batch 1 infers: the next batch's first job taken (unregistered),
    # then registered, then the whole batch taken ahead and prepared - prefetched but not started.
    "after_dequeue_ahead": Point(consumer.DeerWorker, "dequeue_more", BATCH, after=True),
    "after_register_ahead": Point(consumer.DeerWorker, "register_started", BATCH + 1, after=True),
    "after_prepare_ahead": Point(consumer.DeerWorker, "prepare", 2, after=True),
    "after_inference": Point(consumer.DeerWorker, "infer", 1, after=True),
    "after_publish": Point(consumer.DeerWorker, "publish", 1, after=True),  # results out, none finished in RQ
    **{f"after_finalize_{n}": Point(consumer.DeerWorker, "finish", n, after=True)  # jobs 1..n finished
       for n in range(1, BATCH + 1)},
    "after_end_of_batch": Point(consumer.DeerWorker, "end_batch", 1, after=True),
}


def launch(redis_url: str, queue: str, model, point: str) -> subprocess.Popen:
    """Start the driver and return once its model is loaded; it starts working on go()."""
    proc = subprocess.Popen([sys.executable, __file__, redis_url, queue, str(model), point], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = proc.stdout.readline()
    if ready.strip() != "ready":
        proc.kill()
        raise RuntimeError(f"crash driver did not start: {ready!r} {proc.stderr.read()[-2000:]}")
    return proc


def go(proc: subprocess.Popen, timeout: float) -> str:
    """Let a launched driver work until it kills itself; returns its stderr. `timeout`: the caller's bound for
    the batches it serves (its model is loaded already), e.g. host_pace.bound(batches=1)."""
    _, stderr = proc.communicate("go\n", timeout=timeout)
    return stderr


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_at(point: Point) -> None:
    """Make point.owner.name SIGKILL the process on its nth call (before or after the real call)."""
    real, calls = getattr(point.owner, point.name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == point.nth and not point.after:
            die()
        result = real(*args, **kwargs)
        if calls["n"] == point.nth and point.after:
            die()
        return result

    setattr(point.owner, point.name, wrapper)


def main(redis_url: str, queue_name: str, model: str, point: str) -> None:
    config = WorkerConfig(redis_url=redis_url, queue=queue_name, model=model, batch=str(BATCH), max_age=600,
                          metrics_port=0)
    detector = build_detector(config)
    crash_at(POINTS[point])
    connection = connect(redis_url)
    worker = consumer.DeerWorker([Queue(queue_name, connection=connection, serializer=SERIALIZER)],
                                 name=worker_name(0), connection=connection, detector=detector,
                                 cameras=parse_camera_book({}), config=config)
    print("ready", flush=True)
    sys.stdin.readline()
    worker.work(burst=True)
    raise SystemExit("the crash point was never reached")


if __name__ == "__main__":
    main(*sys.argv[1:])
