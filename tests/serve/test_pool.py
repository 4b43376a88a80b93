"""Worker processes against the real Redis: SIGTERM finishes the batch in hand, SIGKILL loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq.job import JobStatus
from rq.registry import StartedJobRegistry

from conftest import FP32_MODEL, GENEROUS_BOUND, ROOT, TEST_REDIS_URL, sample, wait_until
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.producer import enqueue_snapshot

QUEUE = "test-pool"
JOB_TIMEOUT = 20  # the workers' job timeout (behaviour under test, not a bound on the test's waits)
# A SIGTERM'd pool waits the job timeout + 10 s for its workers (WorkerPool.run_forever), then kills them.
POOL_STOP = JOB_TIMEOUT + 10 + GENEROUS_BOUND


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"DEER_WORKER_REDIS_URL": TEST_REDIS_URL, "DEER_WORKER_QUEUE": QUEUE, "DEER_WORKER_METRICS_PORT": "0",
                "DEER_WORKER_MODEL": str(FP32_MODEL), "DEER_WORKER_BATCH": "4", "DEER_WORKER_MAX_AGE": "600",
                "DEER_WORKER_JOB_TIMEOUT": str(JOB_TIMEOUT)})
    env.update(extra)
    return env


def _start(*args, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", *args], cwd=ROOT,
                            env=_env(**env), start_new_session=True)


def _enqueue(conn, n: int) -> list:
    data = sample("day_640x360_deer.jpg")
    return [enqueue_snapshot(conn, data, f"cam{i % 3}", queue=QUEUE, job_timeout=JOB_TIMEOUT, retries=3)
            for i in range(n)]


def _statuses(jobs) -> dict:
    out = {}
    for job in jobs:
        status = job.connection.hget(job.key, "status")
        status = JobStatus(status.decode()) if status else f"missing:{job.id}:{job.connection.exists(job.key)}"
        out[status] = out.get(status, 0) + 1
    return out


def _started(conn) -> int:
    return StartedJobRegistry(QUEUE, connection=conn, serializer=SERIALIZER).count


def test_sigterm_finishes_the_batch_in_hand_then_exits_zero(redis_conn, host_pace):
    proc = _start()
    try:
        jobs = _enqueue(redis_conn, 200)
        wait_until(lambda: _started(redis_conn) > 0, host_pace.bound(loads=1, batches=1), "the worker to be mid-batch")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(host_pace.bound(batches=1)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    counts = _statuses(jobs)
    assert _started(redis_conn) == 0 and counts.get(JobStatus.STARTED, 0) == 0
    assert counts.get(JobStatus.FINISHED, 0) >= 1 and counts.get(JobStatus.QUEUED, 0) >= 1
    assert sum(counts.values()) == 200


def _kill_mid_batch(conn, proc_pid: int, timeout: float) -> int:
    """SIGKILL the worker while it holds started jobs; returns how many it held."""
    def held():
        count = _started(conn)
        if count:
            os.kill(proc_pid, signal.SIGKILL)
        return count

    return wait_until(held, timeout, "the worker to hold a batch")


def test_pool_recovers_a_killed_workers_jobs_and_restarts_it(redis_conn, host_pace):
    pool = _start("--workers", "2")
    jobs = _enqueue(redis_conn, 120)
    try:
        children = wait_until(lambda: len(_children(pool.pid)) == 2 and _children(pool.pid), GENEROUS_BOUND,
                              "two worker processes")
        held = _kill_mid_batch(redis_conn, children[0], host_pace.bound(loads=2, batches=1))  # two load side by side
        killed_at = time.monotonic()
        assert held >= 1
        # the pool sees the death at once: the dead worker's jobs leave STARTED long before its TTL
        # (released before the job timeout, after which RQ's own fallback would release them)
        wait_until(lambda: not _held_by_dead(redis_conn, children[0]), JOB_TIMEOUT, "recovery before the job timeout")
        recovery = time.monotonic() - killed_at
        wait_until(lambda: _statuses(jobs).get(JobStatus.FINISHED, 0) + _statuses(jobs).get(JobStatus.FAILED, 0) == 120,
                   host_pace.bound(loads=1, batches=120 / 4 + 1), "all jobs to end")  # a restart, 30 batches + retries
        assert len(_children(pool.pid)) == 2 and children[0] not in _children(pool.pid)
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(POOL_STOP)
    counts = _statuses(jobs)
    assert counts == {JobStatus.FINISHED: 120}, counts  # retried, none lost, none stuck
    print(f"recovered {held} job(s) in {recovery:.2f} s")


def test_a_restarted_worker_recovers_jobs_of_a_dead_one_on_this_host(redis_conn, host_pace):
    first = _start()
    jobs = _enqueue(redis_conn, 120)
    held = _kill_mid_batch(redis_conn, first.pid, host_pace.bound(loads=1, batches=1))
    first.wait()
    assert held >= 1 and _started(redis_conn) >= 1
    second = _start()
    try:
        wait_until(lambda: _statuses(jobs).get(JobStatus.FINISHED, 0) + _statuses(jobs).get(JobStatus.FAILED, 0) == 120,
                   host_pace.bound(loads=1, batches=120 / 4 + 1), "all jobs to end")  # a load, 30 batches + retries
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(host_pace.bound(batches=1))  # the batch in hand, then exit
    assert _statuses(jobs) == {JobStatus.FINISHED: 120}


def _children(pid: int) -> list[int]:
    """Child processes of pid, from /proc (no pgrep needed)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        except (OSError, IndexError):
            continue  # exited while listed
        if int(fields[1]) == pid and fields[0] != "Z":  # a zombie is a worker already gone
            children.append(int(stat.parent.name))
    return sorted(children)


def _held_by_dead(conn, pid: int) -> bool:
    from rq.executions import Execution
    from rq.utils import parse_composite_key

    for raw in conn.zrange(StartedJobRegistry(QUEUE, connection=conn).key, 0, -1):
        job_id, execution_id = parse_composite_key(raw.decode())
        try:
            if Execution.fetch(execution_id, job_id, conn).worker_name.endswith(f".{pid}"):
                return True
        except Exception:
            continue
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_workers_of_a_pool_killed_by_sigkill_stop_instead_of_running_on_as_orphans(redis_conn, host_pace):
    pool = _start("--workers", "2")
    children: list[int] = []
    try:
        children = wait_until(lambda: len(_children(pool.pid)) == 2 and _children(pool.pid), GENEROUS_BOUND,
                              "two worker processes")
        pool.kill()  # no chance to stop its workers itself
        pool.wait()
        # SIGTERM from the kernel: each finishes its batch in hand (bounded by the job timeout) and exits; one
        # still loading its model (the two side by side) when the pool died may finish that load first
        wait_until(lambda: not any(_alive(pid) for pid in children), JOB_TIMEOUT + host_pace.bound(loads=2),
                   "the orphaned workers to exit")
    finally:
        for pid in [*children, pool.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class _FakeProcess:
    """A child that has exited (code 1) or runs (None)."""
    _pids = iter(range(90000, 99999))

    def __init__(self, code: int | None) -> None:
        self.code, self.pid = code, next(self._pids)

    def poll(self) -> int | None:
        return self.code


def test_a_crash_looping_worker_backs_off_without_holding_up_the_others(monkeypatch):
    """check() never sleeps: worker 0 dies at every start and waits out a growing backoff while worker 1,
    which died once after a long run, is respawned at once; a stop is noticed at the next check."""
    from worker.config import WorkerConfig
    from worker.serve import pool as pool_module

    spawned: list[int] = []

    def spawn(self, index):
        spawned.append(index)
        return _FakeProcess(1 if index == 0 else None)  # worker 0 dies at once, every time

    monkeypatch.setattr(pool_module.WorkerPool, "_spawn", spawn)
    monkeypatch.setattr(pool_module.WorkerPool, "_recover", lambda self, child: None)
    pool = pool_module.WorkerPool(WorkerConfig(), None, {}, 2)
    pool.start()
    pool.children[1].process, pool.children[1].started = _FakeProcess(-9), time.monotonic() - 3600  # long-lived
    spawned.clear()
    began = time.monotonic()
    pool.check()  # both dead: 0 quick (backoff 1 s), 1 after a long run (no backoff)
    pool.check()
    assert time.monotonic() - began < 0.5  # no sleep in the supervision loop
    assert spawned == [1] and pool.children[0].restart_at > time.monotonic() + 0.5
    pool.children[0].restart_at = time.monotonic()  # its backoff is over
    pool.check()
    assert spawned == [1, 0] and pool.children[0].restarts == 1
    pool.stopping = True
    pool.children[0].restart_at, spawned[:] = 0.0, []
    pool.check()
    assert spawned == []  # stopping: nothing respawned
