"""The queue glue against the real Redis: results, batches, expiry, refusals, bad input."""

from __future__ import annotations

import base64
import json
import sys
import time
from dataclasses import replace

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from conftest import DEMO_CONF, GENEROUS_BOUND, ROOT, TEST_REDIS_URL, png_header_only, sample
from private_db import live_result
from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.jobqueue.connections import SERIALIZER
from worker.constants import JOB_FUNCTION
from worker.constants import LATEST_KEY
from worker.jobqueue.producer import enqueue_snapshot
from worker.jobqueue.consumer import DeerWorker

sys.path.insert(0, str(ROOT / "benchmarks"))
import round_trips  # noqa: E402 - the round-trip counter the benchmark uses
from round_trips import counting_round_trips  # noqa: E402

QUEUE = "test-snapshots"
BOOK = parse_camera_book({"default": {"confidence": DEMO_CONF},
                          "cameras": {"roicam": {"roi": {"x": 1000, "y": 0, "width": 2000, "height": 100}}}})


def _config(**kw) -> WorkerConfig:
    return replace(WorkerConfig(redis_url=TEST_REDIS_URL, queue=QUEUE, metrics_port=0), **kw)


def _run(conn, detector, config=None, metrics=None) -> DeerWorker:
    config = config or _config()
    worker = DeerWorker([Queue(QUEUE, connection=conn, serializer=SERIALIZER)], connection=conn, detector=detector,
                        cameras=BOOK, config=config, metrics=metrics, name=f"test-{time.monotonic_ns()}")
    worker.work(burst=True)
    return worker


def _stream(conn, config=None) -> list[dict]:
    config = config or _config()
    return [json.loads(fields[b"result"]) for _, fields in conn.xrange(config.results_stream)]


def _raw_job(conn, payload, func=JOB_FUNCTION) -> Job:
    return Queue(QUEUE, connection=conn, serializer=SERIALIZER).enqueue(func, payload)


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def test_result_goes_to_channel_stream_and_rq(redis_conn, fp32_detector):
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(_config().results_channel)
    job = enqueue_snapshot(redis_conn, sample("day_1280x720_deer.png"), "cam1", queue=QUEUE)
    _run(redis_conn, fp32_detector)
    message = live_result(pubsub, job.id)
    assert message is not None and message["status"] == "ok" and message["deer_detected"] is True
    assert message["detections"][0]["class_name"] == "deer"
    assert set(message["timings_ms"]) == {"queue_wait", "decode", "preprocess", "infer", "postprocess", "total"}
    assert message["image"] == {"width": 1280, "height": 720}
    assert message["model"]["precision"] == "f32"
    assert _stream(redis_conn) == [message]
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == message


def test_key_snapshot_is_deleted_when_its_job_ends_and_a_missing_one_fails(redis_conn, fp32_detector):
    job = enqueue_snapshot(redis_conn, sample("night_640x360_deer.jpg"), "cam1", queue=QUEUE)
    key = job.args[0]["snapshot"]["key"]
    gone = enqueue_snapshot(redis_conn, sample("night_640x360_deer.jpg"), "cam1", queue=QUEUE)
    redis_conn.delete(gone.args[0]["snapshot"]["key"])  # as if its TTL had run out
    _run(redis_conn, fp32_detector)
    status = {m["job_id"]: (m["status"], m.get("error", {}).get("kind")) for m in _stream(redis_conn)}
    assert status == {job.id: ("ok", None), gone.id: ("failed", "snapshot_missing")}
    assert not redis_conn.exists(key)


def test_backlog_is_drained_in_batches_of_four_with_each_job_bookkept(redis_conn, fp32_detector):
    jobs = [enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE) for i in range(6)]
    worker = _run(redis_conn, fp32_detector, _config(batch="4"))
    messages = {m["job_id"]: m for m in _stream(redis_conn)}
    assert set(messages) == {j.id for j in jobs}
    assert sum(m["batch_size"] == 4 for m in messages.values()) == 4  # the first four ran as one batch
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
    registry = lambda cls: cls(QUEUE, connection=redis_conn, serializer=SERIALIZER)  # noqa: E731
    assert registry(StartedJobRegistry).count == 0 and registry(FinishedJobRegistry).count == 6
    assert redis_conn.scard(worker.executions_key) == 0


def test_old_snapshot_expires_without_inference(redis_conn, fp32_detector):
    job = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE,
                           captured_at=time.time() - 60)
    _run(redis_conn, fp32_detector, _config(max_age=10))
    [message] = _stream(redis_conn)
    assert message["status"] == "expired" and message["error"]["kind"] == "too_old"
    assert "infer" not in message["timings_ms"]
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED and job.return_value()["status"] == "expired"


def test_latest_only_expires_superseded_snapshots(redis_conn, fp32_detector):
    now = time.time()
    jobs = [enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE, captured_at=now + i)
            for i in range(3)]
    other = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam2", queue=QUEUE, captured_at=now)
    _run(redis_conn, fp32_detector, _config(latest_only=True))
    status = {m["job_id"]: (m["status"], m.get("error", {}).get("kind")) for m in _stream(redis_conn)}
    assert status[jobs[0].id] == ("expired", "superseded") and status[jobs[1].id] == ("expired", "superseded")
    assert status[jobs[2].id] == ("ok", None) and status[other.id] == ("ok", None)


def test_a_garbled_latest_marker_fails_its_job_and_the_worker_goes_on(redis_conn, fp32_detector):
    garbled = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    redis_conn.hset(LATEST_KEY, "cam1", "not-a-time|x")  # written by something other than our producer
    good = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam2", queue=QUEUE)
    _run(redis_conn, fp32_detector, _config(latest_only=True))
    status = {m["job_id"]: (m["status"], m.get("error", {}).get("kind")) for m in _stream(redis_conn)}
    assert status == {garbled.id: ("failed", "not_json"), good.id: ("ok", None)}


def test_functions_outside_the_allow_list_are_refused(redis_conn, fp32_detector, tmp_path):
    marker = tmp_path / "pwned"
    evil = _raw_job(redis_conn, f"touch {marker}", func="os.system")
    good = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    _run(redis_conn, fp32_detector, _config(batch="4"))
    assert not marker.exists()
    evil.refresh()
    good.refresh()
    assert evil.get_status() == JobStatus.FAILED and "ForbiddenFunctionError" in evil.latest_result().exc_string
    assert "not allow-listed" in evil.latest_result().exc_string
    assert good.get_status() == JobStatus.FINISHED


def test_pickled_job_is_refused_not_unpickled(redis_conn, fp32_detector):
    pickled = Queue(QUEUE, connection=redis_conn).enqueue(JOB_FUNCTION, {"v": 1})  # default pickle serializer
    _run(redis_conn, fp32_detector)
    [message] = _stream(redis_conn)
    assert message["job_id"] == pickled.id and message["status"] == "failed"
    assert message["error"]["kind"] == "not_json"


def _payload(snapshot, camera="cam1", **kw):
    return {"v": 1, "camera_id": camera, "captured_at": time.time(), "snapshot": snapshot, **kw}


def _bad_inputs() -> dict:  # built per test: captured_at must be fresh, or the jobs would expire unrun
    return {
        "empty_input": _payload(_b64(b"")),
        "corrupt_image": _payload(_b64(sample("day_640x360_deer.jpg")[:3000])),
        "unsupported_format": _payload(_b64(b"GIF89a" + b"\x00" * 100)),
        "image_too_large": _payload(_b64(png_header_only(20000, 20000))),
        "roi_outside_image": _payload(_b64(sample("day_640x360_deer.jpg")), camera="roicam"),
        "bad_payload": {"v": 1, "camera_id": "cam1"},
        "payload_too_large": _payload({"b64": "A" * 200_000}),
        "snapshot_file": _payload({"path": "/nonexistent/snap.jpg"}),
    }


def test_each_bad_input_fails_alone_with_its_reason(redis_conn, fp32_detector):
    bad = {kind: _raw_job(redis_conn, payload) for kind, payload in _bad_inputs().items()}
    bad["unsupported_version"] = _raw_job(redis_conn, {**_payload(_b64(b"x")), "v": 99})
    good = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    config = _config(batch="4", max_snapshot_bytes=100_000, snapshot_dirs=["/nonexistent"])
    _run(redis_conn, fp32_detector, config)
    messages = {m["job_id"]: m for m in _stream(redis_conn)}
    for kind, job in bad.items():
        job.refresh()
        assert job.get_status() == JobStatus.FAILED, kind
        assert job.retries_left in (0, None), kind  # bad input is not retried
        expected = "bad_payload" if kind == "unsupported_version" else kind
        assert messages[job.id]["status"] == "failed" and messages[job.id]["error"]["kind"] == expected, kind
        assert messages[job.id]["error"]["message"], kind
        assert job.latest_result().exc_string, kind
    good.refresh()
    assert good.get_status() == JobStatus.FINISHED
    assert FailedJobRegistry(QUEUE, connection=redis_conn, serializer=SERIALIZER).count == len(bad)


def test_a_v2_camera_override_contradicting_the_models_clahe_fails_alone_counted(redis_conn, fp32_detector, tmp_path):
    """A CLAHE model (card: clip 3.0) and a v2 job whose camera override turns CLAHE off: that job fails as
    bad_payload with the reason, the failure is counted, and the next job runs; force_preprocessing serves it."""
    import shutil

    from worker.inference.detector import Detector
    from worker.serve.metrics import WorkerMetrics

    folder = tmp_path / "clahe-model"
    shutil.copytree(fp32_detector.spec.xml.parent, folder / "ir")
    (folder / "MODEL_CARD.json").write_text(json.dumps({
        "name": fp32_detector.spec.name, "serve": "ir", "confidence": DEMO_CONF,
        "preprocessing": {"clahe": True, "clahe_clip": 3.0, "clahe_tiles": [8, 8]}}))
    detector = Detector(folder, batch="1")
    snapshot = _b64(sample("day_640x360_deer.jpg"))
    v2 = {"v": 2, "camera_id": "cam1", "snapshot": snapshot}
    bad = _raw_job(redis_conn, {**v2, "captured_at": time.time(), "camera": {"clahe": False}})
    good = _raw_job(redis_conn, {**v2, "captured_at": time.time(), "camera": {"clahe_clip": 3.0}})
    metrics = WorkerMetrics(camera_labels=[], class_names=detector.spec.names, queues=[QUEUE])
    _run(redis_conn, detector, metrics=metrics)
    messages = {m["job_id"]: m for m in _stream(redis_conn)}
    bad.refresh(), good.refresh()
    assert bad.get_status() == JobStatus.FAILED and good.get_status() == JobStatus.FINISHED
    error = messages[bad.id]["error"]
    assert error["kind"] == "bad_payload" and "clahe false (the model: true)" in error["message"], error
    assert messages[good.id]["status"] == "ok"
    failed = metrics.registry.get_sample_value("deer_worker_jobs_total", {"outcome": "failed", "error_kind": "bad_payload"})
    assert failed == 1
    forced = _raw_job(redis_conn, {**v2, "captured_at": time.time(), "camera": {"clahe": False}})
    _run(redis_conn, detector, _config(force_preprocessing=True))
    forced.refresh()
    assert forced.get_status() == JobStatus.FINISHED


def test_rq_info_lists_our_worker_and_queue(redis_conn, fp32_detector):
    import subprocess
    import sys
    from pathlib import Path

    enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    worker = DeerWorker([Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER)], connection=redis_conn,
                        detector=fp32_detector, cameras=BOOK, config=_config(), name="deer-test-w0.1")
    worker.register_birth()
    try:
        rq = Path(sys.executable).parent / "rq"
        out = subprocess.run([str(rq), "info", "--url", TEST_REDIS_URL, "--serializer", "json", "--raw"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
    finally:
        worker.register_death()
    assert f"queue {QUEUE} 1" in out
    assert "worker deer-test-w0.1" in out and QUEUE in out.split("worker deer-test-w0.1", 1)[1]


def _round_trips(conn_url: str, detector, jobs: int) -> int:
    """Runs a burst worker over `jobs` fresh jobs; returns how many times it went to Redis (one
    connection checkout per command or pipeline sent: benchmarks/round_trips.py counts the same way)."""
    import redis

    conn = redis.Redis.from_url(conn_url)
    for i in range(jobs):
        enqueue_snapshot(conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE)
    with counting_round_trips(conn) as count:
        _run(conn, detector)
        return count()


def test_a_job_costs_a_handful_of_round_trips(redis_conn, int8_detector, fp32_detector):
    # RQ's own path: ~20 round trips a job (heartbeats of three commands sent three times, two
    # registration pipelines, a GET, a DEL, an HSET...); folded, 6-8 at batch 1 and 4-5 at batch 4.
    counted = {}
    for detector, most in ((int8_detector, 9), (fp32_detector, 6)):
        one = _round_trips(TEST_REDIS_URL, detector, 1)
        nine = _round_trips(TEST_REDIS_URL, detector, 9)
        counted[detector.max_batch] = (nine - one) / 8
        assert counted[detector.max_batch] <= most, (detector.max_batch, one, nine)
    assert {m["status"] for m in _stream(redis_conn)} == {"ok"} and len(_stream(redis_conn)) == 20
    # RQ's SimpleWorker on the same payloads, its job only GETting and DELeting the snapshot: more a job
    rq_plain = round_trips.per_job(lambda n: round_trips.rq_simple_worker(TEST_REDIS_URL, n), 5)
    assert rq_plain > max(counted.values()), (rq_plain, counted)


def test_repeated_heartbeats_are_skipped_but_the_worker_key_never_runs_short(redis_conn, fp32_detector):
    """With the production repeat window: whether the second beat falls inside it is measured, not
    assumed (a slow host may take longer than the window between two calls). The skip itself, with no
    clock involved, is pinned by test_rq_compat."""
    from worker.constants import DEFAULT_WORKER_TTL as WORKER_TTL

    worker = DeerWorker([Queue(QUEUE, connection=redis_conn, serializer=SERIALIZER)], connection=redis_conn,
                        detector=fp32_detector, cameras=BOOK, config=_config(), name=f"test-{time.monotonic_ns()}")
    worker.register_birth()
    try:
        first_called = time.monotonic()
        worker.heartbeat()
        first_returned = time.monotonic()
        assert redis_conn.ttl(worker.key) > WORKER_TTL + 50
        redis_conn.expire(worker.key, 40)
        second_called = time.monotonic()
        worker.heartbeat()  # a full beat again: skipped if it came within the window
        second_returned = time.monotonic()
        skipped = redis_conn.ttl(worker.key) <= 40
        # The gap the worker saw lies between these two measured bounds.
        if second_returned - first_called < worker.heartbeat_repeat:
            assert skipped
        elif second_called - first_returned >= worker.heartbeat_repeat:
            assert not skipped
        with redis_conn.pipeline() as pipe:  # a job's beat sets its own, shorter TTL ...
            worker.heartbeat(15, pipeline=pipe)
            pipe.execute()
        assert redis_conn.ttl(worker.key) <= 15
        worker.heartbeat()  # ... so the next full beat is sent, whenever it comes
        assert redis_conn.ttl(worker.key) > WORKER_TTL + 50
    finally:
        worker.register_death()


# --- results published once (issue 14) ----------------------------------------------------------
def _refused(metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("deer_worker_refused_publishes_total", {"reason": reason}) or 0.0


def _worker(conn, detector, name: str, metrics=None) -> DeerWorker:
    return DeerWorker([Queue(QUEUE, connection=conn, serializer=SERIALIZER)], connection=conn, detector=detector,
                      cameras=BOOK, config=_config(), metrics=metrics, name=name)


def test_a_worker_cut_off_past_its_heartbeat_does_not_publish_late(redis_conn, fp32_detector, caplog):
    """Recovery gives the job to another run while this one infers (as when it was cut off from Redis
    past its heartbeat): its late result is refused and counted, it leaves the job to the new run, and
    exactly one ok reaches the stream.

    The take-ahead thread looks at the queue while the batch infers. A worker cut off from Redis takes
    nothing, so the recovery here waits until that look is over (it finds the queue empty). Left to
    the threads' order, a loaded host let the take-ahead look after the recovery and take the requeued
    job again, a legitimate second run of it, which this stub then recovered too: a second refusal."""
    from worker.jobqueue.recovery import recover_jobs
    from worker.serve.metrics import WorkerMetrics

    job = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    metrics = WorkerMetrics(camera_labels=[], class_names=[], queues=[QUEUE])
    late = _worker(redis_conn, fp32_detector, f"late-{time.monotonic_ns()}", metrics)
    real_infer, real_take_ahead, ahead = late.infer, late.take_ahead, []

    def take_ahead_seen(batch):
        ahead.append(real_take_ahead(batch))
        return ahead[-1]

    def infer_while_recovered(prepared):
        assert len(ahead) == 1 and ahead[0].result(timeout=GENEROUS_BOUND) is None  # looked: nothing queued
        assert recover_jobs(redis_conn, [QUEUE], lambda name: name == late.name) == 1
        return real_infer(prepared)

    late.take_ahead, late.infer = take_ahead_seen, infer_while_recovered
    late.work(burst=True, max_jobs=1)
    assert _stream(redis_conn) == [] and _refused(metrics, "not_owner") == 1
    assert "no longer this worker's" in caplog.text
    assert job.id in Queue(QUEUE, connection=redis_conn).job_ids  # retried by RQ's cleanup, not finished late
    job.refresh()
    assert job.get_status() == JobStatus.QUEUED and job.latest_result() is None
    assert redis_conn.exists(job.args[0]["snapshot"]["key"])  # the new run still needs the snapshot
    _run(redis_conn, fp32_detector)
    assert [(m["job_id"], m["status"]) for m in _stream(redis_conn)] == [(job.id, "ok")]
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED


def test_a_rerun_of_a_published_job_publishes_nothing_more(redis_conn, fp32_detector):
    """A run that published and then died before finishing the job in RQ: recovery re-runs it, and the
    re-run finishes the job without a second message (the marker names the same job generation)."""
    from worker.jobqueue.recovery import recover_jobs
    from worker.serve.metrics import WorkerMetrics

    job = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
    first = _worker(redis_conn, fp32_detector, f"first-{time.monotonic_ns()}")
    first.finish = lambda item: None  # dies between publishing and finishing: nothing after the publish
    first.end_batch = lambda done_keys, idle=True: None
    first.work(burst=True, max_jobs=1)
    assert [m["status"] for m in _stream(redis_conn)] == ["ok"]
    assert recover_jobs(redis_conn, [QUEUE], lambda name: name == first.name) == 1
    metrics = WorkerMetrics(camera_labels=[], class_names=[], queues=[QUEUE])
    _worker(redis_conn, fp32_detector, f"again-{time.monotonic_ns()}", metrics).work(burst=True)
    assert [(m["job_id"], m["status"]) for m in _stream(redis_conn)] == [(job.id, "ok")]
    assert _refused(metrics, "already_published") == 1
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    # a caller re-using the job id for a new job is a new generation: published again
    again = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE, job_id=job.id)
    _run(redis_conn, fp32_detector)
    assert [(m["job_id"], m["status"]) for m in _stream(redis_conn)] == [(job.id, "ok"), (again.id, "ok")]


def test_a_high_priority_job_overtakes_the_backlog(redis_conn, fp32_detector):
    backlog = [enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE) for i in range(6)]
    urgent = enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), "door", queue=QUEUE, priority="high")
    _run(redis_conn, fp32_detector)
    order = [m["job_id"] for m in _stream(redis_conn)]
    assert order[0] == urgent.id and sorted(order[1:]) == sorted(j.id for j in backlog)


def test_the_next_batch_is_taken_while_one_infers_and_its_heartbeat_covers_the_wait(redis_conn, fp32_detector):
    """Overlap: during the first batch's inference the next one is taken (at most one ahead), registered
    as started with a heartbeat TTL that covers the wait for the batch in hand."""
    jobs = [enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE, job_timeout=30)
            for i in range(3 * fp32_detector.max_batch)]
    worker = _worker(redis_conn, fp32_detector, f"ahead-{time.monotonic_ns()}")
    registry = StartedJobRegistry(QUEUE, connection=redis_conn)
    real_infer, real_take_ahead, seen, ahead = worker.infer, worker.take_ahead, [], []

    def take_ahead_seen(batch):
        ahead.append(real_take_ahead(batch))
        return ahead[-1]

    def infer_and_look(prepared):
        if ahead[-1] is not None:  # None: nothing taken ahead (overlap off), which the counts below catch
            ahead[-1].result(timeout=GENEROUS_BOUND)  # the preparation thread has taken the next batch, if any
        seen.append({member.decode(): score - time.time()
                     for member, score in redis_conn.zrange(registry.key, 0, -1, withscores=True)})
        elapsed.append(time.monotonic() - started)
        return real_infer(prepared)

    worker.infer, worker.take_ahead, elapsed, started = infer_and_look, take_ahead_seen, [], time.monotonic()
    worker.work(burst=True)
    batch = fp32_detector.max_batch
    assert [len(s) for s in seen] == [2 * batch, 2 * batch, batch], seen  # never more than one batch ahead
    # Scores are whole seconds (RQ): each bound has one second of rounding, plus the time measured
    # between the worker starting and the look.
    ttl, lefts = worker.get_heartbeat_ttl(jobs[0]), sorted(seen[0].values())
    in_hand, ahead = lefts[:batch], lefts[batch:]
    assert all(left <= ttl + 1 for left in in_hand), (ttl, lefts)
    assert all(ttl + 30 - elapsed[0] - 1 <= left <= ttl + 30 + 1 for left in ahead), (ttl, lefts, elapsed)
    assert {m["status"] for m in _stream(redis_conn)} == {"ok"} and len(_stream(redis_conn)) == len(jobs)


def test_a_failing_infer_request_fails_only_its_half_of_the_batch_and_rq_retries_it(redis_conn, fp32_detector,
                                                                                    monkeypatch):
    # A batch of 4 runs as two concurrent halves (two cores): the half whose infer request fails is a
    # runtime failure, not bad input, so its two jobs get a non-final `failed` and their retry serves them.
    if not fp32_detector.concurrent:
        pytest.skip("one core: no concurrent halves")

    class FailsOnce:
        def __init__(self, real):
            self.real, self.failed = real, False

        def start_async(self, inputs, share_inputs=False):
            self.real.start_async(inputs, share_inputs=share_inputs)

        def wait(self):
            self.real.wait()
            if not self.failed:
                self.failed = True
                raise RuntimeError("infer request failed")

        def get_output_tensor(self, index):
            return self.real.get_output_tensor(index)

    runner = next(iter(fp32_detector.concurrent.values()))
    monkeypatch.setattr(runner, "requests", [runner.requests[0], FailsOnce(runner.requests[1]), *runner.requests[2:]])
    jobs = [enqueue_snapshot(redis_conn, sample("day_640x360_deer.jpg"), f"cam{i}", queue=QUEUE, retries=1)
            for i in range(4)]
    _run(redis_conn, fp32_detector, _config(batch="4"))
    statuses = {job.id: [m["status"] for m in _stream(redis_conn) if m["job_id"] == job.id] for job in jobs}
    assert [statuses[job.id] for job in jobs] == [["ok"], ["ok"], ["failed", "ok"], ["failed", "ok"]]
    failed = [m for m in _stream(redis_conn) if m["status"] == "failed"]
    assert {m["error"]["kind"] for m in failed} == {"RuntimeError"}
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
