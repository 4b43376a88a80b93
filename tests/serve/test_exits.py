"""How a worker process ends: a stop signal at any stage is exit 0 after an orderly shutdown, never a
death by the signal and never std::terminate from OpenVINO's threads at exit. The burst and failure
exits are in test_cli.py; benchmarks/exit_stress.py repeats all of these hundreds of times."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from rq import Queue
from rq.registry import StartedJobRegistry

from conftest import FP32_MODEL, GENEROUS_BOUND, ROOT, TEST_REDIS_URL, sample, stop_handlers_kept, wait_until
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.producer import enqueue_snapshot
from worker.serve.stopping import catches_sigterm

QUEUE = "test-exits"
STREAM = "test-exits:results"


def _worker(tmp_path) -> tuple[subprocess.Popen, object]:
    env = {**os.environ, "DEER_WORKER_REDIS_URL": TEST_REDIS_URL, "DEER_WORKER_QUEUE": QUEUE,
           "DEER_WORKER_RESULTS_STREAM": STREAM, "DEER_WORKER_METRICS_PORT": "0",
           "DEER_WORKER_MODEL": str(FP32_MODEL), "DEER_WORKER_BATCH": "4"}
    log = open(tmp_path / "worker.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "INFO", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)
    return proc, log


def _stopped(proc, log) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(GENEROUS_BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
    log.seek(0)
    return code, log.read()


def test_a_stop_during_start_up_exits_0_and_takes_no_job(redis_conn, tmp_path, host_pace):
    job = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    proc, log = _worker(tmp_path)
    wait_until(lambda: catches_sigterm(proc.pid) or proc.poll() is not None, GENEROUS_BOUND,
               "the worker to take SIGTERM")
    code, text = _stopped(proc, log)  # while it imports or loads the model: it has served nothing
    assert code == 0, text[-2000:]
    assert "during start-up" in text and "terminate called" not in text and "Traceback" not in text
    assert job.id in Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER).job_ids  # still queued, untaken


def test_a_stop_while_serving_finishes_the_batch_in_hand_and_exits_0(redis_conn, tmp_path, host_pace):
    proc, log = _worker(tmp_path)
    jobs = [enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE) for i in range(40)]
    wait_until(lambda: redis_conn.xlen(STREAM) > 0 or proc.poll() is not None, host_pace.bound(loads=1),
               "the first result")
    code, text = _stopped(proc, log)  # mid-backlog: a batch in inference, the next one taken ahead
    assert code == 0, text[-2000:]
    assert "terminate called" not in text and "Traceback" not in text
    published = [json.loads(f[b"result"])["job_id"] for _, f in redis_conn.xrange(STREAM)]
    queued = set(Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER).job_ids)
    started = StartedJobRegistry(QUEUE, connection=redis_conn, serializer=SERIALIZER).count
    # Every job was either answered once or left queued for the next worker; none stays started.
    assert len(published) == len(set(published)) and started == 0
    assert {j.id for j in jobs} == set(published) | queued, (len(published), len(queued))


def test_a_stop_that_lands_just_before_rqs_loop_ends_it_before_any_job(redis_conn, monkeypatch):
    """The window between the worker being ready and RQ installing its own handlers: a stop taken there
    by the process's handler must reach RQ's loop (it was lost, and the worker served on)."""
    from dataclasses import replace

    from worker.config import WorkerConfig
    from worker.jobqueue.consumer import DeerWorker
    from worker.serve.service import run_worker
    from worker.serve.stopping import StopRequest

    real_work = DeerWorker.work

    def work_after_a_stop(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled by `stop` in this (main) thread, before RQ's loop
        return real_work(self, *args, **kwargs)

    monkeypatch.setattr(DeerWorker, "work", work_after_a_stop)
    job = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    config = replace(WorkerConfig(redis_url=TEST_REDIS_URL, queue=QUEUE, metrics_port=0, model=str(FP32_MODEL)),
                     batch="1", shapes=["16x9"])
    with stop_handlers_kept():
        stop = StopRequest().install()
        assert run_worker(config, burst=True, stop=stop) == 0
    assert stop.requested
    assert job.id in Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER).job_ids  # not taken
