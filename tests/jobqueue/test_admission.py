"""Admission policy without Redis: what runs, what expires, what is rejected, and with which error."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import pytest

from worker.cameras import parse_camera_book
from worker.config import WorkerConfig
from worker.constants import JOB_FUNCTION
from worker.errors import (ForbiddenFunctionError, JobRefusedError, ModelUnavailableError, NotJsonError,
                           PayloadError, PayloadTooLargeError)
from worker.inference.preprocess import Preprocessing
from worker.jobqueue.admission import Expire, Reject, Run, decide, prefetch_key, superseded

NOW = 1_764_201_600.0
MODEL = "deer-yolo26n"
CAMERAS = parse_camera_book({"cameras": {"off": {"enabled": False}}})


@dataclass
class FakeJob:
    """The attributes of a dequeued DeerJob admission reads."""

    payload: object = None
    id: str = "job-1"
    func_name: str = JOB_FUNCTION
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    has_hooks: bool = False
    enqueued_at: datetime | None = None

    def __post_init__(self):
        if not self.args and self.payload is not None:
            self.args = (self.payload,)


class PickledJob(FakeJob):
    @property
    def func_name(self):  # what RQ's JSON serializer raises on pickled data
        raise UnicodeDecodeError("utf-8", b"\x80", 0, 1, "invalid start byte")

    @func_name.setter
    def func_name(self, value):
        pass


def payload(**kw) -> dict:
    return {"v": 1, "camera_id": "cam1", "captured_at": NOW - 1, "snapshot": {"key": "deer:snap:abc"}, **kw}


def verdict(job, *, latest=None, **config):
    return decide(job, config=replace(WorkerConfig(max_age=10.0), **config), model=MODEL, cameras=CAMERAS,
                  started=NOW, latest_of=lambda camera: latest)


def test_a_fresh_allow_listed_snapshot_runs_with_its_camera_settings():
    result = verdict(FakeJob(payload()))
    assert isinstance(result, Run)
    assert result.snapshot.camera_id == "cam1" and result.snapshot.snapshot_key == "deer:snap:abc"
    assert result.settings == CAMERAS.get("cam1")


@pytest.mark.parametrize("job, error, kind", [
    (FakeJob(payload(), func_name="os.system"), ForbiddenFunctionError, "forbidden_function"),
    (FakeJob(payload(), has_hooks=True), ForbiddenFunctionError, "forbidden_function"),
    (PickledJob(payload()), NotJsonError, "not_json"),
    (FakeJob(args=(payload(), 2)), PayloadError, "bad_payload"),
    (FakeJob(payload(), kwargs={"x": 1}), PayloadError, "bad_payload"),
    (FakeJob({"v": 3, "camera_id": "cam1", "snapshot": {"key": "deer:snap:abc"}}), PayloadError, "bad_payload"),
    (FakeJob(payload(snapshot={"b64": "A" * 200})), PayloadTooLargeError, "payload_too_large"),
    (FakeJob(payload(model="other-model")), ModelUnavailableError, "model_unavailable"),
], ids=["function", "hooks", "pickled", "two-args", "kwargs", "version", "too-large", "model"])
def test_rejections_carry_the_error_class_of_their_kind(job, error, kind):
    result = verdict(job, max_snapshot_bytes=100)
    assert isinstance(result, Reject) and type(result.error) is error and result.error.kind == kind
    assert isinstance(result.error, JobRefusedError) == (kind in ("forbidden_function", "not_json"))


def test_a_job_for_the_served_model_runs():
    assert isinstance(verdict(FakeJob(payload(model=MODEL))), Run)


def test_a_rejected_model_still_names_its_camera_for_the_result():
    result = verdict(FakeJob(payload(model="other")))
    assert result.snapshot.camera_id == "cam1"


def test_too_old_expires_with_its_age_measured_from_capture():
    result = verdict(FakeJob(payload(captured_at=NOW - 30)))
    assert isinstance(result, Expire) and result.reason == "too_old" and result.age == pytest.approx(30)
    assert isinstance(verdict(FakeJob(payload(captured_at=NOW - 9.9))), Run)


def test_without_a_capture_time_age_counts_from_enqueueing():
    old = datetime.fromtimestamp(NOW - 60, tz=timezone.utc)
    body = {k: v for k, v in payload().items() if k != "captured_at"}
    assert verdict(FakeJob(body, enqueued_at=old)).reason == "too_old"
    assert isinstance(verdict(FakeJob(body)), Run)  # neither time: age 0


def test_latest_only_expires_a_snapshot_a_newer_one_of_its_camera_supersedes():
    newer = f"{NOW}|job-2"
    assert verdict(FakeJob(payload()), latest=newer, latest_only=True).reason == "superseded"
    assert isinstance(verdict(FakeJob(payload()), latest=newer, latest_only=False), Run)
    assert isinstance(verdict(FakeJob(payload()), latest=f"{NOW - 1}|job-1", latest_only=True), Run)  # itself
    assert isinstance(verdict(FakeJob(payload()), latest=None, latest_only=True), Run)


def test_superseded_compares_time_and_id():
    assert superseded(f"{NOW}|b", "a", NOW - 1)
    assert not superseded(f"{NOW}|a", "a", NOW - 1)
    assert not superseded(f"{NOW - 2}|b", "a", NOW - 1)
    assert not superseded(None, "a", NOW)


def test_a_disabled_camera_expires_its_snapshots_after_the_freshness_check():
    assert verdict(FakeJob(payload(camera_id="off"))).reason == "camera_disabled"
    assert verdict(FakeJob(payload(camera_id="off", captured_at=NOW - 30))).reason == "too_old"


def test_prefetch_key_only_for_an_allow_listed_key_snapshot():
    assert prefetch_key(FakeJob(payload())) == "deer:snap:abc"
    assert prefetch_key(FakeJob(payload(), func_name="os.system")) is None
    assert prefetch_key(FakeJob(payload(snapshot={"key": "rq:job:x"}))) is None
    assert prefetch_key(PickledJob(payload())) is None


# --- contract v2: the job's own settings ----------------------------------------------------------
NAMES = ("deer", "person")


def v2_verdict(job, **config):
    return decide(job, config=replace(WorkerConfig(max_age=10.0), **config), model=MODEL, cameras=CAMERAS,
                  started=NOW, latest_of=lambda camera: None, class_names=NAMES)


def test_a_v2_job_runs_with_its_own_conf_classes_and_camera_override():
    result = v2_verdict(FakeJob(payload(v=2, conf=0.2, classes=["person"],
                                        camera={"clahe": True, "name": "renamed", "confidence": 0.9})))
    assert isinstance(result, Run)
    base = CAMERAS.get("cam1")
    # conf beats the override's confidence; the metric label stays the configured camera's
    assert result.settings == replace(base, clahe=True, confidence=0.2, classes=("person",))


def test_a_v2_camera_override_can_disable_and_a_v1_job_keeps_the_camera_settings():
    assert isinstance(v2_verdict(FakeJob(payload(v=2, camera={"enabled": False}))), Expire)
    assert v2_verdict(FakeJob(payload())).settings == CAMERAS.get("cam1")


def test_a_v2_max_age_replaces_the_workers_for_that_job():
    old = payload(v=2, captured_at=NOW - 5, max_age=3)
    result = v2_verdict(FakeJob(old))
    assert isinstance(result, Expire) and result.reason == "too_old" and result.max_age == 3.0
    assert isinstance(v2_verdict(FakeJob(payload(v=2, captured_at=NOW - 30, max_age=60))), Run)
    assert isinstance(v2_verdict(FakeJob(payload(captured_at=NOW - 30))), Expire)  # the worker's 10 s


def test_a_v2_job_asking_for_classes_the_model_lacks_is_rejected_alone():
    result = v2_verdict(FakeJob(payload(v=2, classes=["deer", "moose"])))
    assert isinstance(result, Reject) and isinstance(result.error, PayloadError)
    assert "moose" in str(result.error) and result.error.kind == "bad_payload"
    result = v2_verdict(FakeJob(payload(v=2, camera={"classes": ["elk"]})))
    assert isinstance(result, Reject) and "elk" in str(result.error)


# --- a v2 camera override against the model's own preprocessing ------------------------------------
CLAHE_MODEL = Preprocessing(clahe=True, clahe_clip=3.0, clahe_tiles=(8, 8))


@pytest.mark.parametrize("override, clash", [
    ({"clahe": False}, "clahe false (the model: true)"),
    ({"clahe_clip": 2.0}, "clahe_clip 2.0 (the model: 3.0)"),
    ({"clahe": True, "clahe_tiles": [4, 4]}, "clahe_tiles [4, 4] (the model: [8, 8])"),
    ({"clahe": False, "force_preprocessing": True}, "clahe false"),  # the job cannot force it
], ids=["clahe-off", "other-clip", "other-tiles", "job-cannot-force"])
def test_a_v2_override_contradicting_the_models_preprocessing_fails_that_job_unless_the_worker_forces(override, clash):
    job = FakeJob(payload(v=2, camera=override))
    result = decide(job, config=WorkerConfig(max_age=10.0), model=MODEL, cameras=CAMERAS, started=NOW,
                    latest_of=lambda camera: None, preprocessing=CLAHE_MODEL)
    assert isinstance(result, Reject) and isinstance(result.error, PayloadError) and result.error.kind == "bad_payload"
    assert clash in str(result.error) and "force_preprocessing: true" in str(result.error)
    assert result.snapshot.camera_id == "cam1"  # the result still names its camera
    forced = decide(job, config=WorkerConfig(max_age=10.0, force_preprocessing=True), model=MODEL, cameras=CAMERAS,
                    started=NOW, latest_of=lambda camera: None, preprocessing=CLAHE_MODEL)
    applied = {k: tuple(v) if isinstance(v, list) else v for k, v in override.items()}
    assert isinstance(forced, Run) and forced.settings == replace(CAMERAS.get("cam1"), **applied)


def test_a_v2_override_that_agrees_with_the_model_or_an_operator_forced_camera_runs():
    agreeing = FakeJob(payload(v=2, camera={"clahe": True, "clahe_clip": 3.0, "confidence": 0.5}))
    contradicting = FakeJob(payload(v=2, camera={"clahe": False}))
    forced_book = parse_camera_book({"cameras": {"cam1": {"clahe": False, "force_preprocessing": True}}})
    for job, book, model in ((agreeing, CAMERAS, CLAHE_MODEL), (contradicting, CAMERAS, None),
                             (contradicting, forced_book, CLAHE_MODEL),
                             (FakeJob(payload(v=2, conf=0.3)), CAMERAS, CLAHE_MODEL)):
        result = decide(job, config=WorkerConfig(max_age=10.0), model=MODEL, cameras=book, started=NOW,
                        latest_of=lambda camera: None, preprocessing=model)
        assert isinstance(result, Run), (job.payload, result)

