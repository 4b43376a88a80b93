"""Run on a lab host (own UTS/PID/mount namespaces, own machine id, the common hostname):

    python identity_driver.py hold REDIS_URL QUEUE      take one job as a worker of this host, print its
                                                        name, stay alive until stdin closes
    python identity_driver.py recover REDIS_URL QUEUE   a worker start-up's recovery on this host: print
                                                        how many jobs it recovered

The job is taken the consumer's way (rq_compat.BatchWorker: dequeue, register started), under the
worker name the service would give this process (recovery.worker_name).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rq.queue import Queue  # noqa: E402

from worker.jobqueue.connections import SERIALIZER, connect  # noqa: E402
from worker.jobqueue.contract import DeerJob  # noqa: E402
from worker.jobqueue.recovery import dead_on_this_host, recover_jobs, worker_name  # noqa: E402
from worker.jobqueue.rq_compat import BatchWorker  # noqa: E402


def main(mode: str, url: str, queue_name: str) -> int:
    connection = connect(url)
    if mode == "recover":
        print(recover_jobs(connection, [queue_name], dead_on_this_host), flush=True)
        return 0
    queue = Queue(queue_name, connection=connection, serializer=SERIALIZER)
    worker = BatchWorker([queue], connection=connection, serializer=SERIALIZER, job_class=DeerJob,
                         name=worker_name(0))
    worker.register_birth()
    job, got = worker.dequeue_more()
    worker.register_started(job, got, 600)
    print(worker.name, flush=True)
    sys.stdin.read()  # alive, holding the job, until the test closes our stdin
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
