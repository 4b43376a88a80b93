"""A producer on a lab host: enqueue at RATE jobs/s through URL (a redis+sentinel:// one) until stdin closes.

    python producer_driver.py URL QUEUE RATE durable|plain

Prints one JSON line per event: {"acked": id, "t": time} once enqueue_snapshot returned (durable: a
replica confirmed it), {"unconfirmed": id} when a durable enqueue was not confirmed (it is retried with
the same id, idempotently, until confirmed), {"error": ...} when a plain one raised (its snapshot is
dropped, a new one comes next tick: any Redis error, READONLY from a demoted primary included), and
{"done": true} at the end.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from worker.errors import EnqueueUnconfirmedError  # noqa: E402
from worker.jobqueue.connections import connect  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402

SAMPLE = ROOT / "models" / "demo" / "samples" / "day_640x360_deer.jpg"
CONFIRM_TIMEOUT_MS = 500  # a replica on the lab's bridge answers in well under a millisecond


def say(**event) -> None:
    print(json.dumps(event), flush=True)


def main(url: str, queue: str, rate: float, mode: str) -> int:
    durable = mode == "durable"
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    connection = connect(url, timeout=1.0, command_timeout=2.0)
    image = SAMPLE.read_bytes()
    period, n = 1.0 / rate, 0
    retry: str | None = None  # a durable job id not yet confirmed: enqueue it again before anything new
    while not stop.is_set():
        job_id = retry or uuid.uuid4().hex
        try:
            enqueue_snapshot(connection, image, f"cam{n % 8}", queue=queue, job_id=job_id, job_timeout=10,
                             durable=durable, wait_timeout_ms=CONFIRM_TIMEOUT_MS)
            say(acked=job_id, t=time.time(), retried=retry is not None)
            retry, n = None, n + 1
        except EnqueueUnconfirmedError as exc:
            say(unconfirmed=exc.job_id, t=time.time())
            retry = exc.job_id
        except (redis.RedisError, OSError) as exc:
            say(error=type(exc).__name__, job_id=job_id, t=time.time())
        stop.wait(period)
    say(done=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]))
