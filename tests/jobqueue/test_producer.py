import fakeredis
import pytest
from rq import Queue

from conftest import sample
from worker.jobqueue.connections import SERIALIZER
from worker.errors import CorruptImageError, PayloadError, PayloadTooLargeError
from worker.constants import LATEST_KEY
from worker.jobqueue.producer import enqueue_snapshot


@pytest.fixture
def fake():
    return fakeredis.FakeRedis()


def test_enqueue_writes_a_json_job_with_lifetimes(fake):
    job = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", captured_at=100.0, queue="q", retries=2,
                           job_timeout=30, result_ttl=60, failure_ttl=120, queued_ttl=90)
    queue = Queue("q", connection=fake, serializer=SERIALIZER)
    assert queue.job_ids == [job.id]
    fetched = queue.fetch_job(job.id)
    assert fetched.func_name == "worker.tasks.detect_snapshot"
    payload = fetched.args[0]
    assert payload["v"] == 1 and payload["camera_id"] == "cam1" and payload["captured_at"] == 100.0
    assert fetched.timeout == 30 and fetched.result_ttl == 60 and fetched.failure_ttl == 120 and fetched.ttl == 90
    assert fetched.retries_left == 2
    assert fake.hget(LATEST_KEY, "cam1").decode() == f"100.0|{job.id}"
    key = payload["snapshot"]["key"]
    assert fake.get(key) == sample("day_640x360_deer.jpg")  # raw bytes beside the job, not in it
    assert 0 < fake.ttl(key) <= 90 + 3 * (30 + 60)


def test_inline_and_by_path_modes(fake, tmp_path):
    job = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q", inline=True)
    assert "b64" in job.args[0]["snapshot"]
    path = tmp_path / "s.jpg"
    path.write_bytes(sample("day_640x360_deer.jpg"))
    job = enqueue_snapshot(fake, path, "cam1", queue="q", by_path=True)
    assert job.args[0]["snapshot"] == {"path": str(path)}
    assert not fake.keys("deer:snap:*")


def test_producer_refuses_what_a_worker_would_refuse(fake):
    with pytest.raises(CorruptImageError):
        enqueue_snapshot(fake, sample("day_640x360_deer.jpg")[:500], "cam1")
    with pytest.raises(PayloadTooLargeError):
        enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", max_snapshot_bytes=1000)
    with pytest.raises(PayloadError, match="camera_id"):
        enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "bad camera id")
    assert Queue("deer-snapshots", connection=fake, serializer=SERIALIZER).count == 0
    assert not fake.keys("deer:snap:*")  # nothing left behind for refused snapshots


def test_high_priority_goes_to_the_front_of_the_one_queue(fake):
    first = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q")
    second = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q")
    urgent = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "door", queue="q", priority="high")
    assert Queue("q", connection=fake, serializer=SERIALIZER).job_ids == [urgent.id, first.id, second.id]
    with pytest.raises(PayloadError, match="priority"):
        enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q", priority="urgent")


def test_per_job_settings_make_a_v2_payload_and_none_keeps_v1(fake):
    plain = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q")
    tuned = enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q", conf=0.4,
                             classes=["deer"], camera_settings={"clahe": True}, max_age=2.5)
    assert plain.args[0]["v"] == 1 and not {"conf", "classes", "camera", "max_age"} & set(plain.args[0])
    payload = tuned.args[0]
    assert payload["v"] == 2 and payload["conf"] == 0.4 and payload["classes"] == ["deer"]
    assert payload["camera"] == {"clahe": True} and payload["max_age"] == 2.5
    with pytest.raises(PayloadError, match="conf"):
        enqueue_snapshot(fake, sample("day_640x360_deer.jpg"), "cam1", queue="q", conf=0)
