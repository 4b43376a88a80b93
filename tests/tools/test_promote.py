"""`deer-worker promote` end to end against a real worker process on the real Redis: a worse model fails the
no-loss gate (exit 3, nothing reloaded, the worker keeps serving production); the demo checkpoint passes,
is exported with the version given, every worker switches and its results carry that version, and
`deer-worker rollback` returns to production."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import DEMO, GENEROUS_BOUND, ROOT, TEST_REDIS_URL, sample, wait_until
from worker.jobqueue.producer import enqueue_snapshot
from worker.serve.model_state import read_desired

QUEUE, STREAM = "test-promote", "test-promote:results"
PRODUCTION = DEMO / "deer-yolo26n_dynamic_raw_fp32_openvino_model"  # the demo folder's served IR (within gate)
WORSE_IR = "deer-yolo26n_dynamic_raw_int8_openvino_model"  # ~1.2 mAP50 points below it on the held-out split
HELDOUT_IMAGES = 50  # heldout.yaml: the images the gate runs through each model
EXPORT_LOADS = 30  # an export, counted in model loads of this host as tests/tools/test_export.py does


def _env() -> dict:
    return {**os.environ, "DEER_WORKER_REDIS_URL": TEST_REDIS_URL, "DEER_WORKER_QUEUE": QUEUE,
            "DEER_WORKER_RESULTS_STREAM": STREAM, "DEER_WORKER_METRICS_PORT": "0", "DEER_WORKER_MODEL": str(PRODUCTION),
            "DEER_WORKER_MAX_AGE": "600", "DEER_WORKER_THREADS": "1", "YOLO_OFFLINE": "1"}


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "--log-level", "WARNING", *args, "--redis", TEST_REDIS_URL],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture
def worker(redis_conn, host_pace):
    """One real worker process serving PRODUCTION on QUEUE -> a function serving one job -> its result."""
    from worker.tools.lifecycle import live_workers

    proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run"], cwd=ROOT, env=_env(),
                            start_new_session=True)
    timeout = 20 * host_pace.load_s + 10

    def serve_one() -> dict:
        job = enqueue_snapshot(redis_conn, sample("night_640x360_deer.jpg"), "cam1", queue=QUEUE)
        wait_until(lambda: any(json.loads(f[b"result"])["job_id"] == job.id for _, f in redis_conn.xrange(STREAM)),
                   timeout, "the job's result")
        return next(r for r in (json.loads(f[b"result"]) for _, f in redis_conn.xrange(STREAM)) if r["job_id"] == job.id)

    try:
        wait_until(lambda: live_workers(redis_conn, QUEUE), timeout, "the worker")
        yield serve_one
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=host_pace.bound(batches=1))  # the batch in hand, then exit
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_worse_model_fails_the_gate_exit_3_and_nothing_is_reloaded(worker, redis_conn, tmp_path, host_pace):
    before = worker()
    assert before["status"] == "ok"
    # A folder `export` could have written: the demo's INT8 raw IR, its card claiming it is within export's
    # own gate vs the .pt, so only the gate against production can stop it.
    candidate = tmp_path / "worse"
    candidate.mkdir()
    shutil.copytree(DEMO / WORSE_IR, candidate / WORSE_IR)
    card = json.loads((DEMO / "MODEL_CARD.json").read_text())
    card.update(serve=WORSE_IR, version="demo worse")
    card["irs"] = {WORSE_IR: {**card["irs"][WORSE_IR], "within_gate": True}}
    (candidate / "MODEL_CARD.json").write_text(json.dumps(card))

    result = _cli("promote", str(candidate), "--data", str(DEMO / "heldout.yaml"), "--json",  # imports, the gate:
                  timeout=host_pace.bound(loads=4, batches=2 * HELDOUT_IMAGES))  # two IRs, 50 images each
    assert result.returncode == 3, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["status"] == "gate_failed" and not report["gate"]["passed"]
    drop = report["gate"]["models"][1]["drop"]  # the served path: INT8 loses ~1 mAP50-95 point here
    assert "vs production" in report["gate"]["reasons"][0] and (drop["mAP50"] > 0.003 or drop["mAP50-95"] > 0.005)
    assert result.stderr.strip().splitlines()[-1].startswith("deer-worker: gate_failed: demo worse not promoted")
    assert "reload" not in report and read_desired(redis_conn) is None  # nothing reloaded
    after = worker()
    assert after["status"] == "ok" and after["model"] == before["model"]


@pytest.mark.slow  # ~30 s (one full export of the .pt): opt-in, to keep the default suite in its budget
def test_the_demo_checkpoint_is_promoted_with_its_version_and_rollback_returns(worker, redis_conn, tmp_path, host_pace):
    before = worker()
    out = tmp_path / "promoted"
    # an export, the gate (two IRs, the held-out images each), the snapshot compare and the workers' reload
    result = _cli("promote", str(DEMO / "deer-yolo26n.pt"), "--data", str(DEMO / "heldout.yaml"),
                  "--snapshots", str(DEMO / "samples"), "--version", "demo v9 (promoted)", "--out", str(out), "--json",
                  timeout=host_pace.bound(loads=EXPORT_LOADS + 6, batches=2 * HELDOUT_IMAGES + 10))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["status"] == "promoted" and report["gate"]["passed"] and report["reload"]["ok"]
    assert report["compare"]["summary"]["images"] == len(list((DEMO / "samples").iterdir()))
    assert json.loads((out / "MODEL_CARD.json").read_text())["version"] == "demo v9 (promoted)"
    desired = read_desired(redis_conn)
    assert desired.model == str(out.resolve()) and desired.previous == str(PRODUCTION)
    promoted = worker()
    assert promoted["status"] == "ok" and promoted["model"]["version"] == "demo v9 (promoted)"

    again = _cli("promote", str(DEMO / "deer-yolo26n.pt"), "--data", str(DEMO / "heldout.yaml"), "--out", str(out),
                 timeout=GENEROUS_BOUND)  # refused before exporting
    assert again.returncode == 2 and "never overwrites" in again.stderr  # the kept model is not exported over

    rollback = host_pace.bound(loads=1)  # every worker loads production again
    back = _cli("rollback", "--timeout", str(rollback), timeout=rollback + GENEROUS_BOUND)
    assert back.returncode == 0, back.stderr
    assert read_desired(redis_conn).model == str(PRODUCTION)
    assert worker()["model"] == before["model"]
