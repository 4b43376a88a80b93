"""deer-worker reload on the real Redis: two real worker processes under a job stream switch model once,
between batches, never back (also across a SIGKILL and restart after the switch); a broken model is not
switched to and reload fails loudly, with every job served by the old model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from rq.job import JobStatus

from conftest import FP32_MODEL, INT8_MODEL, ROOT, TEST_REDIS_URL, free_port, sample, wait_until
from worker.jobqueue.producer import enqueue_snapshot
from worker.serve.model_state import read_desired
from worker.tools.lifecycle import live_workers

QUEUE = "test-reload"
STREAM = "test-reload:results"
FP32_NAME, INT8_NAME = "deer-yolo26n", "deer-yolo26n_int8"  # the demo models' spec names, as results carry them


def _env(model, metrics_port: int = 0) -> dict:
    env = dict(os.environ)
    env.update({"DEER_WORKER_REDIS_URL": TEST_REDIS_URL, "DEER_WORKER_QUEUE": QUEUE,
                "DEER_WORKER_RESULTS_STREAM": STREAM, "DEER_WORKER_METRICS_PORT": str(metrics_port),
                "DEER_WORKER_MODEL": str(model), "DEER_WORKER_BATCH": "4", "DEER_WORKER_MAX_AGE": "600",
                "DEER_WORKER_THREADS": "1"})
    return env


class Workers:
    def __init__(self, model, metrics_port: int = 0):
        self.model, self.metrics_port, self.procs = model, metrics_port, {}

    def start(self, index: int) -> None:
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--worker-index", str(index)],
            cwd=ROOT, env=_env(self.model, self.metrics_port), start_new_session=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class JobStream:
    """A job every `period` s on its own thread; while `name_model` is set, every other job names it."""

    def __init__(self, conn, period: float):
        self.conn, self.period, self.jobs, self.name_model = conn, period, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._data = sample("day_640x360_deer.jpg")

    def _run(self) -> None:
        while not self._stop.is_set():
            model = self.name_model if len(self.jobs) % 2 else None
            self.jobs.append(enqueue_snapshot(self.conn, self._data, "cam1", queue=QUEUE, model=model, retries=3))
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _results(conn) -> list[dict]:
    return [json.loads(fields[b"result"]) for _, fields in conn.xrange(STREAM)]


def _finish(conn, jobs, timeout: float) -> list[dict]:
    """Every job finished; -> the result messages, one per job."""
    wait_until(lambda: all(conn.hget(j.key, "status") in (JobStatus.FINISHED.encode(), JobStatus.FAILED.encode())
                           for j in jobs), timeout, "every job to end")
    results = _results(conn)
    assert sorted(r["job_id"] for r in results) == sorted(j.id for j in jobs)
    return results


def _reload(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", "--log-level", "WARNING", *args, "--redis", TEST_REDIS_URL,
                           "--timeout", str(timeout), "--json"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout + 60, env=_env(FP32_MODEL))


def _models_by_worker(results: list[dict]) -> dict[str, list[str]]:
    by_worker: dict[str, list[str]] = {}
    for r in sorted(results, key=lambda r: r["finished_at"]):
        by_worker.setdefault(r["worker"], []).append(r["model"]["name"])
    return by_worker


def _model_loaded_series(port: int) -> list[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [line for line in text.splitlines() if line.startswith("deer_worker_model_loaded{")]


def _live(conn, n: int) -> list[str]:
    return (lambda names: names if len(names) == n else None)(live_workers(conn, QUEUE))


@pytest.mark.slow  # two workers, three model loads and a restart: minutes on a loaded 2-core host
def test_reload_under_load_switches_each_worker_once_and_never_back_also_after_a_kill(redis_conn, host_pace):
    load_timeout = 20 * host_pace.load_s + 10  # two models load on two shared cores at once
    period = host_pace.batch_s / 2  # 2 jobs per batch time: well under two workers' 8, so no backlog builds
    metrics_port = free_port()
    workers = Workers(FP32_MODEL, metrics_port)
    try:
        for index in (0, 1):
            workers.start(index)
        wait_until(lambda: _live(redis_conn, 2), load_timeout, "two live workers")
        with JobStream(redis_conn, period) as stream:
            stream.name_model = FP32_NAME  # jobs naming the old model, before and during the switch
            wait_until(lambda: len(_results(redis_conn)) >= 10, load_timeout, "results on the old model")
            answer = _reload("reload", "--model", str(INT8_MODEL), timeout=load_timeout)
            assert answer.returncode == 0, answer.stderr
            report = json.loads(answer.stdout)
            assert len(report["workers"]) == 2 and all(a["status"] == "switched" for a in report["workers"].values())
            switched_at = len(stream.jobs)
            wait_until(lambda: len(_results(redis_conn)) >= switched_at + 10, load_timeout, "results after the switch")
            # A worker started after the switch knows only the new model's name: jobs naming the old one are
            # all served before the restart.
            stream.name_model = None
            naming_old = list(stream.jobs)
            wait_until(lambda: all(redis_conn.hget(j.key, "status") == JobStatus.FINISHED.encode() for j in naming_old),
                       load_timeout, "the jobs naming the old model")
            killed = workers.procs[1]
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait()
            workers.start(1)  # as systemd or the pool would: it must come back on the new model
            wait_until(lambda: _live(redis_conn, 2), load_timeout, "the restarted worker")
            restarted = f".{workers.procs[1].pid}"
            wait_until(lambda: sum(r["worker"].endswith(restarted) for r in _results(redis_conn)) >= 5, load_timeout,
                       "results of the restarted worker")
        results = _finish(redis_conn, stream.jobs, load_timeout)
        assert {r["status"] for r in results} == {"ok"}, [r.get("error") for r in results if r["status"] != "ok"]
        by_worker = _models_by_worker(results)
        for worker, models in by_worker.items():
            switch = models.index(INT8_NAME) if INT8_NAME in models else len(models)
            assert set(models[switch:]) == {INT8_NAME}, f"{worker} went back to the old model: {models}"
            if worker.endswith(restarted):
                assert switch == 0, f"the restarted {worker} served the old model: {models}"
            else:
                assert 0 < switch < len(models), f"{worker} did not switch under load: {models}"
        assert len(by_worker) == 3  # the two originals and the restarted one
        assert read_desired(redis_conn).model == str(INT8_MODEL)
        series = _model_loaded_series(metrics_port)  # worker 0, switched while serving
        assert [line for line in series if line.endswith(" 1.0")] == series and len(series) == 1
        assert f'model="{INT8_NAME}"' in series[0]
    finally:
        workers.stop()


@pytest.mark.slow  # two workers under a job stream
def test_a_broken_model_is_not_switched_to_and_reload_fails_loudly(redis_conn, host_pace, tmp_path):
    load_timeout = 20 * host_pace.load_s + 10
    period = host_pace.batch_s / 2
    broken = tmp_path / "broken_openvino_model"
    broken.mkdir()
    (broken / "model.xml").write_text("<net>not a model</net>")
    (broken / "model.bin").write_bytes(b"\0" * 64)
    workers = Workers(INT8_MODEL)
    try:
        for index in (0, 1):
            workers.start(index)
        wait_until(lambda: _live(redis_conn, 2), load_timeout, "two live workers")
        with JobStream(redis_conn, period) as stream:
            wait_until(lambda: len(_results(redis_conn)) >= 10, load_timeout, "results")
            answer = _reload("reload", "--model", str(broken), timeout=load_timeout)
            answered_at = len(stream.jobs)
            wait_until(lambda: len(_results(redis_conn)) >= answered_at + 5, load_timeout, "results after the reload")
        assert answer.returncode == 4, answer.stderr
        report = json.loads(answer.stdout)
        assert [a["status"] for a in report["workers"].values()] == ["failed", "failed"]
        assert all(a["reason"] for a in report["workers"].values())
        assert answer.stderr.strip().splitlines()[-1].startswith("deer-worker: reload_failed: ")
        results = _finish(redis_conn, stream.jobs, load_timeout)
        assert {r["status"] for r in results} == {"ok"} and {r["model"]["name"] for r in results} == {INT8_NAME}
    finally:
        workers.stop()
