"""The worker process's start (issue 17, cold start): its age by the kernel's clock, and the start-up line
that says where the time to ready went (benchmarks/cold_start.py reads it)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from conftest import DEMO, GENEROUS_BOUND, ROOT, TEST_REDIS_URL, free_port, wait_until


def test_process_age_counts_from_the_process_start_not_from_the_first_python_line():
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5); "
                          "from worker.serve.service import process_age; print(process_age())"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    assert 0.5 <= float(out) <= wall + 0.02  # the kernel's start time has 10 ms steps


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _start_phases(model, cache, tmp_path, pace) -> dict:
    """One `deer-worker run` until /readyz 200, stopped (it must exit 0); the phases of its start-up line."""
    port = free_port()
    env = {**os.environ, "DEER_WORKER_REDIS_URL": TEST_REDIS_URL, "DEER_WORKER_QUEUE": "test-service-start",
           "DEER_WORKER_METRICS_PORT": str(port), "DEER_WORKER_MODEL": str(model), "DEER_WORKER_CACHE_DIR": str(cache),
           "DEER_WORKER_SHAPES": "16x9,4x3", "DEER_WORKER_BATCH": "1"}
    log = tmp_path / f"worker-{port}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "INFO", "run"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            wait_until(lambda: _ready(port) or proc.poll() is not None, pace.bound(loads=1), "the worker to be ready")
            assert proc.poll() is None, log.read_text()[-2000:]
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(GENEROUS_BOUND)  # a stop right after ready: RQ's loop may not have begun
    assert code == 0, log.read_text()[-2000:]
    lines = re.findall(r"ready ([0-9.]+) s after the process started; start-up seconds (\{.*\})$", log.read_text(), re.M)
    assert len(lines) == 1, log.read_text()[-2000:]
    phases = json.loads(lines[0][1])
    assert phases["ready"] == float(lines[0][0]) or abs(phases["ready"] - float(lines[0][0])) < 0.01
    return phases


def test_the_start_up_line_says_where_the_time_went_and_a_cached_start_skips_compile_and_timing(
        redis_conn, tmp_path, host_pace):
    empty = _start_phases(DEMO, tmp_path / "cache", tmp_path, host_pace)  # the demo's card serves a dynamic IR
    filled = _start_phases(DEMO, tmp_path / "cache", tmp_path, host_pace)
    for phases in (empty, filled):
        parts = phases["before_model"] + phases["model"] + phases["after_model"]
        assert abs(phases["ready"] - parts) < 0.02 and min(phases["before_model"], phases["model"]) > 0
        detector = phases["detector"]
        assert detector["compiled"] == 2  # batch 1 at two input shapes (16:9 and 4:3)
        assert detector["load"] + detector["compile"] + detector["warm_runs"] + detector["timing"] <= \
            detector["total"] <= phases["model"]
    assert empty["detector"]["from_cache"] == 0 and empty["detector"]["timing"] > 0
    assert empty["detector"]["warm_runs"] == 0
    assert filled["detector"]["from_cache"] == 2 and filled["detector"]["timing"] == 0
    assert filled["detector"]["warm_runs"] > 0
