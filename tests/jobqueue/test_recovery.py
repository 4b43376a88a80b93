"""Which worker names are dead on this host: a pid that is now only a thread's id is not the worker."""

from __future__ import annotations

import subprocess
import sys
import threading

from conftest import GENEROUS_BOUND
from worker.jobqueue.recovery import dead_on_this_host, worker_name


def test_a_live_process_is_alive_and_an_exited_one_dead():
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({GENEROUS_BOUND})"])  # killed below
    try:
        assert not dead_on_this_host(worker_name(0, pid=child.pid))
    finally:
        child.kill()
        child.wait()
    assert dead_on_this_host(worker_name(0, pid=child.pid))


def test_a_pid_reused_as_a_thread_id_is_not_a_live_worker():
    """kill(tid, 0) succeeds for a thread of a live process: that number names no worker process."""
    ready, release = threading.Event(), threading.Event()
    ids: list[int] = []

    def run():
        ids.append(threading.get_native_id())
        ready.set()
        release.wait(GENEROUS_BOUND)  # alive until the check is done

    thread = threading.Thread(target=run)
    thread.start()
    try:
        ready.wait(GENEROUS_BOUND)
        assert dead_on_this_host(worker_name(0, pid=ids[0]))
    finally:
        release.set()
        thread.join()
