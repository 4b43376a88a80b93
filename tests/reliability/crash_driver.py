"""Run a real DeerWorker that SIGKILLs itself at one chosen point of its batch handling.

    python crash_driver.py REDIS_URL QUEUE MODEL POINT

POINT (each a moment where a crash leaves Redis in a different state):
  after_take      the 2nd job of a batch was moved to RQ's intermediate list, not yet registered
  after_register  the 2nd job is registered as started (snapshot read), the batch not yet inferred
  mid_inference   every job of the batch is started, inference is running
  mid_finalize    the 1st job of the batch is finished, the others still started
  after_publish   the results are published, no job is finished in RQ yet
The crash is a real SIGKILL of this process; only where it happens is chosen.
"""

from __future__ import annotations

import os
import signal
import sys

from rq.queue import Queue

import worker.jobqueue.consumer as rqworker
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.jobqueue.connections import SERIALIZER, connect
from worker.jobqueue.recovery import worker_name
from worker.serve.service import build_detector


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def on_call(cls, name: str, nth: int, after: bool = False) -> None:
    """Make cls.name SIGKILL the process on its nth call (before or after the real call)."""
    real, calls = getattr(cls, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and not after:
            die()
        result = real(*args, **kwargs)
        if calls["n"] == nth and after:
            die()
        return result

    setattr(cls, name, wrapper)


def main(redis_url: str, queue_name: str, model: str, point: str) -> None:
    config = WorkerConfig(redis_url=redis_url, queue=queue_name, model=model, batch="4", max_age=600,
                          metrics_port=0)
    detector = build_detector(config)
    if point == "after_take":  # the second job dequeued, not yet registered
        on_call(rqworker.DeerWorker, "_take", 2)
    elif point == "after_register":  # the second job registered as started, not yet inferred
        on_call(rqworker.DeerWorker, "_take", 2, after=True)
    elif point == "mid_inference":
        on_call(type(detector), "detect_batch", 1)
    elif point == "mid_finalize":
        on_call(rqworker.DeerWorker, "_finalize_success", 2)
    elif point == "after_publish":
        on_call(rqworker, "publish", 1, after=True)
    else:
        raise SystemExit(f"unknown point {point!r}")
    connection = connect(redis_url)
    worker = rqworker.DeerWorker([Queue(queue_name, connection=connection, serializer=SERIALIZER)],
                                 name=worker_name(0), connection=connection, detector=detector,
                                 cameras=parse_camera_book({}), config=config)
    worker.work(burst=True)
    raise SystemExit("the crash point was never reached")


if __name__ == "__main__":
    main(*sys.argv[1:])
