"""The wire contract, frozen: a job written by the pre-refactor producer (tests/fixtures/wire, recorded by
record_v1.py at 52e45e4) is served by today's worker with the same result message, field by field; and
today's producer writes the same job hash, payload, keys and function name. The result side depends on the
demo model's weights: record_result.py re-records it (v1 shape) when the model changes (v3: 2026-11-30).

Volatile fields (compared by presence and type only): finished_at, worker, the timings' values.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import re
import time
import zlib

import pytest

from conftest import ROOT, stop_handlers_kept
from private_db import live_result, private_db
from worker.cameras import load_camera_book
from worker.config import load_config
from worker.inference.build import build_detector
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.contract import DeerJob
from worker.jobqueue.producer import enqueue_snapshot
from worker.serve.service import run_worker

DB = 10
URL = f"redis://127.0.0.1:6379/{DB}"
WIRE = ROOT / "tests" / "fixtures" / "wire"
JOB = json.loads((WIRE / "v1_job.json").read_text())
RESULT = json.loads((WIRE / "v1_result.json").read_text())
CHANNEL, STREAM = "deer:results", "deer:results:stream"  # where the old worker published (its defaults)
VOLATILE = {"finished_at", "worker"}
JOB_TIMESTAMPS = {"created_at", "enqueued_at"}
# Result fields added since v1 (additive only: old consumers ignore them; README's result schema lists them).
ADDITIVE = {"result": {"zones", "alert_classes"}, "result.detections[]": {"zones"}}
SNAPSHOT_KEY = re.compile(r"deer:snap:[0-9a-f]{32}")
BOX_STEP, CONFIDENCE_STEP = 0.1, 1e-4  # the result JSON's rounding (detections.to_json)
# INT8 kernels round differently on AVX2-only and VNNI/AVX-512 hosts (v2's recording on AVX2 read 0.4505
# where an EPYC with VNNI served 0.4563; v3's was recorded on the VNNI host). So the served numbers are held
# to this host's own detector at the JSON rounding, and to the recording within what an ISA change moves.
ACROSS_ISA_CONFIDENCE, ACROSS_ISA_BOX = 0.02, 2.0


@pytest.fixture
def conn():
    with private_db(DB) as connection:
        yield connection


def load_fixture(conn) -> None:
    """The recorded Redis state, key by key, exactly as the old producer left it."""
    snapshot = (ROOT / JOB["snapshot_file"]).read_bytes()
    assert hashlib.sha256(snapshot).hexdigest() == JOB["snapshot_sha256"], "the sample file changed"
    conn.hset(JOB["job_key"], mapping={k: base64.b64decode(v) for k, v in JOB["job_hash_b64"].items()})
    conn.rpush(JOB["queue_key"], *JOB["queue_entries"])
    conn.sadd("rq:queues", JOB["queue_key"])  # RQ's set of queues, listed in redis_keys
    conn.set(JOB["snapshot_key"], snapshot)
    conn.hset(JOB["latest_key"], mapping=JOB["latest"])
    assert sorted(k.decode() for k in conn.keys("*")) == JOB["redis_keys"]


# The model the recording served (record_v1.py: the then default `model:` of configs/worker.yaml), pinned here so
# the recorded comparison does not move with the shipped default (models/demo since its card serves another IR).
RECORDED_MODEL = "models/demo/deer-yolo26n_int8_openvino_model"


def fixture_config():
    """The new worker's settings, as record_v1.py configured the old one."""
    return load_config(ROOT / "configs" / "worker.yaml", env={}, overrides={
        "redis_url": URL, "max_age": 1e12, "metrics_port": 0, "zones": "models/demo/zones.yaml",
        "model": RECORDED_MODEL})


def serve_burst() -> None:
    config = fixture_config()
    with stop_handlers_kept():  # the worker installs its own
        assert run_worker(config, 0, burst=True) == 0


def assert_same_shape(new, old, path="result") -> None:
    """Same keys at every level, same JSON type for every value."""
    assert type(new) is type(old), (path, new, old)
    if isinstance(old, dict):
        added = ADDITIVE.get(re.sub(r"\[\d+\]", "[]", path), set())
        assert set(new) - added == set(old), (path, sorted((set(new) - added) ^ set(old)))
        for key in old:
            assert_same_shape(new[key], old[key], f"{path}.{key}")
    elif isinstance(old, list) and old and new:
        for i, (a, b) in enumerate(zip(new, old)):
            assert_same_shape(a, b, f"{path}[{i}]")


def assert_same_detections(got: list[dict], want: list[dict], confidence: float, box: float) -> None:
    assert len(got) == len(want)
    for new, old in zip(got, want):
        assert (new["class_id"], new["class_name"]) == (old["class_id"], old["class_name"])
        assert new["confidence"] == pytest.approx(old["confidence"], abs=confidence * 1.01)
        assert new["box"] == pytest.approx(old["box"], abs=box * 1.01)


def this_hosts_detections() -> list[dict]:
    """The fixture's snapshot through this host's detector directly, under the job's camera settings."""
    config = fixture_config()
    settings = load_camera_book(config.resolve(config.zones)).get(RESULT["camera_id"])
    result = build_detector(config).detect((ROOT / JOB["snapshot_file"]).read_bytes(), settings)
    return result.detections.to_json()


def assert_same_result(new: dict) -> None:
    assert_same_shape(new, RESULT)
    for key in set(RESULT) - VOLATILE - {"timings_ms", "detections"}:
        assert new[key] == RESULT[key], key
    assert_same_detections(new["detections"], RESULT["detections"], ACROSS_ISA_CONFIDENCE, ACROSS_ISA_BOX)
    served = [{k: v for k, v in d.items() if k != "zones"} for d in new["detections"]]
    assert_same_detections(served, this_hosts_detections(), CONFIDENCE_STEP, BOX_STEP)


def test_a_v1_job_of_the_old_producer_gets_the_same_result_message(conn):
    load_fixture(conn)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)
    serve_burst()
    streamed = [json.loads(fields[b"result"]) for _, fields in conn.xrange(STREAM)]
    kept = DeerJob.fetch(RESULT["job_id"], connection=conn, serializer=SERIALIZER).return_value()
    assert streamed == [live_result(pubsub, RESULT["job_id"])] == [kept]
    assert_same_result(streamed[0])
    assert not conn.exists(JOB["snapshot_key"])  # consumed: the worker deletes a finished job's snapshot


def masked(key: str) -> str:
    return SNAPSHOT_KEY.sub("deer:snap:<id>", key)


def job_record(key: str, fields: dict[str, bytes]) -> dict:
    """A job hash with its data decoded ([function, instance, args, kwargs]) and snapshot keys masked."""
    fields = dict(fields)
    return {"key": key, "data": json.loads(masked(zlib.decompress(fields.pop("data")).decode())), "fields": fields}


def test_todays_producer_writes_what_the_old_one_wrote(conn):
    old = job_record(JOB["job_key"], {k: base64.b64decode(v) for k, v in JOB["job_hash_b64"].items()})
    payload = old["data"][2][0]
    enqueue_snapshot(conn, (ROOT / JOB["snapshot_file"]).read_bytes(), payload["camera_id"],
                     captured_at=payload["captured_at"], job_id=payload["job_id"])
    [key] = [k.decode() for k in conn.keys("rq:job:*")]
    new = job_record(key, {k.decode(): v for k, v in conn.hgetall(key).items()})
    assert new["key"] == old["key"]
    assert set(new["fields"]) == set(old["fields"])
    assert {k: v for k, v in new["fields"].items() if k not in JOB_TIMESTAMPS} == \
        {k: v for k, v in old["fields"].items() if k not in JOB_TIMESTAMPS}
    assert new["data"] == old["data"]  # function name, payload (v, camera, time, snapshot key, job id)
    module, _, function = new["data"][0].rpartition(".")
    assert (module, function) == ("worker.tasks", "detect_snapshot")
    assert callable(getattr(importlib.import_module(module), function))  # producers may import it by that path
    assert sorted(masked(k.decode()) for k in conn.keys("*")) == sorted(masked(k) for k in JOB["redis_keys"])
    assert [e.decode() for e in conn.lrange(JOB["queue_key"], 0, -1)] == JOB["queue_entries"]
    assert {k.decode(): v.decode() for k, v in conn.hgetall(JOB["latest_key"]).items()} == JOB["latest"]
    [snap_key] = [k for k in conn.keys("deer:snap:*")]
    assert hashlib.sha256(conn.get(snap_key)).hexdigest() == JOB["snapshot_sha256"]
