"""Each outcome's result message, metric labels and RQ registry, from the one map in outcomes.py."""

from __future__ import annotations

import numpy as np

from worker.cameras import parse_camera_book
from worker.errors import CorruptImageError, ForbiddenFunctionError, NotJsonError, PayloadError
from worker.inference.detections import Detections
from worker.inference.detector import DetectionResult, StageTimings
from worker.jobqueue import outcomes
from worker.jobqueue.results import ModelInfo
from worker.serve.metrics import WorkerMetrics

CONTEXT = outcomes.JobContext(job_id="j1", camera_id="cam1", captured_at=1.5, worker="w0",
                              model=ModelInfo("m", "1", "int8", "f32", ("deer",)), queue_wait=0.25)


class Recorder:
    def __init__(self):
        self.counted = []

    def count_job(self, outcome, error_kind="none"):
        self.counted.append((outcome, error_kind))


def _labels(outcome) -> tuple[str, str]:
    metrics = Recorder()
    outcome.count(metrics)
    return metrics.counted[0]


def test_ok_is_finished_with_its_message_and_timings_in_ms():
    result = DetectionResult(Detections.empty(("deer",)), StageTimings(decode=0.002, infer=0.01), 1, 640, 360)
    outcome = outcomes.ok(CONTEXT, result)
    assert outcome.error is None and _labels(outcome) == ("ok", "none")
    message = outcome.message
    assert message["status"] == "ok" and message["job_id"] == "j1" and message["camera_id"] == "cam1"
    assert message["image"] == {"width": 640, "height": 360} and "error" not in message
    assert message["timings_ms"]["queue_wait"] == 250.0 and message["timings_ms"]["infer"] == 10.0


def test_expired_is_finished_labelled_by_its_reason():
    outcome = outcomes.expired(CONTEXT, "too_old", 12.0, 10.0)
    assert outcome.error is None and _labels(outcome) == ("expired", "too_old")
    assert outcome.message["status"] == "expired" and outcome.message["error"]["kind"] == "too_old"
    assert outcome.message["timings_ms"] == {"queue_wait": 250.0}


def test_failed_goes_to_the_failed_registry_with_its_error():
    error = CorruptImageError("truncated")
    outcome = outcomes.failed(CONTEXT, error)
    assert outcome.error is error and _labels(outcome) == ("failed", "corrupt_image")
    assert outcome.message["status"] == "failed"
    assert outcome.message["error"] == {"kind": "corrupt_image", "message": "truncated"}


def test_an_error_outside_ours_is_labelled_by_its_class_name():
    assert _labels(outcomes.failed(CONTEXT, TimeoutError("slow"))) == ("failed", "TimeoutError")


def test_refused_is_decided_by_error_class_not_by_kind():
    for error in (ForbiddenFunctionError("no"), NotJsonError("pickled")):
        outcome = outcomes.failed(CONTEXT, error)
        assert outcome.label == "refused" and outcome.message["status"] == "failed"  # the wire says failed
    impostor = PayloadError("looks refused")
    impostor.kind = "not_json"  # a kind string alone no longer makes a refusal
    assert outcomes.failed(CONTEXT, impostor).label == "failed"


def test_the_detections_counter_counts_what_the_result_reports_not_what_an_ignore_zone_dropped():
    camera = {"name": "backyard", "zones": {"road": {"rect": {"x": 0, "y": 0, "width": 100, "height": 50},
                                                     "ignore": True}}}
    settings = parse_camera_book({"cameras": {"cam1": camera}}).get("cam1")
    found = Detections(np.array([[0, 0, 20, 40], [0, 60, 20, 90], [40, 60, 60, 95]], np.float32),
                       np.full(3, 0.9, np.float32), np.array([0, 0, 1], np.int32), ("deer", "person"))
    outcome = outcomes.ok(CONTEXT, DetectionResult(found, StageTimings(), 1, 100, 100), settings)
    metrics = WorkerMetrics(camera_labels=["backyard"], class_names=["deer", "person"], queues=["q"])
    outcome.count(metrics)
    counted = {(s.labels["camera"], s.labels["class_name"]): s.value for family in metrics.registry.collect()
               for s in family.samples if s.name == "deer_worker_detections_total"}
    reported = [d["class_name"] for d in outcome.message["detections"]]
    assert reported == ["deer", "person"]  # the deer on the road was dropped by the ignore zone
    assert counted[("backyard", "deer")] == 1 and counted[("backyard", "person")] == 1
    assert sum(counted.values()) == len(reported)
