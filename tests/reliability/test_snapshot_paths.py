"""File-path snapshots end to end: jobs through the real queue to a real `deer-worker run` process.

Only regular files inside snapshot_dirs (symlinks resolved) are read. Everything else fails alone
with `snapshot_file` (or `bad_payload` / `payload_too_large`), and nothing can stall the worker:
a FIFO in the snapshot directory would block a plain open() forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from rq import Queue

from conftest import ROOT, sample
from relsupport import harness, private_redis  # noqa: F401 - fixture
from worker.jobqueue.connections import SERIALIZER
from worker.constants import JOB_FUNCTION

QUEUE = "snapshot-paths"


def _job(queue: Queue, path: str):
    return queue.enqueue(JOB_FUNCTION, {"v": 1, "camera_id": "cam1", "captured_at": time.time(),
                                        "snapshot": {"path": path}})


def test_path_snapshots_are_confined_through_the_queue(private_redis, tmp_path, host_pace):
    snaps, other = tmp_path / "snaps", tmp_path / "other"
    snaps.mkdir()
    other.mkdir()
    image = sample("day_640x360_deer.jpg")
    (snaps / "good.jpg").write_bytes(image)
    (other / "secret.jpg").write_bytes(image)  # a valid image: only confinement can refuse it
    (snaps / "big.jpg").write_bytes(image + b"\0" * 200_000)
    os.symlink(other / "secret.jpg", snaps / "escape.jpg")
    os.symlink(snaps / "good.jpg", snaps / "inside-link.jpg")
    os.symlink("/etc/passwd", snaps / "passwd.jpg")
    os.symlink("/dev/zero", snaps / "zero.jpg")
    os.mkfifo(snaps / "fifo.jpg")
    (snaps / "sub").mkdir()
    cases = {
        str(snaps / "good.jpg"): ("ok", "none"),
        str(snaps / "inside-link.jpg"): ("ok", "none"),
        str(snaps / ".." / "other" / "secret.jpg"): ("failed", "snapshot_file"),
        str(snaps) + "/../other/./secret.jpg": ("failed", "snapshot_file"),
        str(snaps / "escape.jpg"): ("failed", "snapshot_file"),
        str(snaps / "passwd.jpg"): ("failed", "snapshot_file"),
        str(snaps / "zero.jpg"): ("failed", "snapshot_file"),
        "/etc/passwd": ("failed", "snapshot_file"),
        "/proc/self/environ": ("failed", "snapshot_file"),
        "good.jpg": ("failed", "snapshot_file"),  # relative: resolved against the worker's cwd, outside
        str(snaps / "missing.jpg"): ("failed", "snapshot_file"),
        str(snaps / "sub"): ("failed", "snapshot_file"),
        str(snaps): ("failed", "snapshot_file"),
        str(snaps / "fifo.jpg"): ("failed", "snapshot_file"),
        str(snaps / "good.jpg" / "x"): ("failed", "snapshot_file"),
        str(snaps / ("a" * 5000)): ("failed", "snapshot_file"),
        str(snaps / "big.jpg"): ("failed", "payload_too_large"),
        str(snaps / "good.jpg") + "\0.png": ("failed", "bad_payload"),
        "": ("failed", "bad_payload"),
    }
    conn = private_redis.client()
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    jobs = {path: _job(queue, path) for path in cases}
    env = harness.worker_env(private_redis.url(), queue=QUEUE, max_age=600, snapshot_dirs=str(snaps),
                             max_snapshot_bytes=100_000)
    worker = subprocess.run([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--burst"], cwd=ROOT,
                            env=env, timeout=host_pace.bound(loads=1, batches=len(cases) / 4),  # a load, the jobs
                            capture_output=True, text=True)
    assert worker.returncode == 0, worker.stderr[-3000:]
    outcome = harness.account(conn, [job.id for job in jobs.values()]).outcome
    got = {path: outcome[job.id] for path, job in jobs.items()}
    assert got == cases
    assert "unhandled exception" not in worker.stderr
