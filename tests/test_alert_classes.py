"""The alarm, `deer_detected`, decided once by the worker with the model it served (its card's alert classes,
resolved against the model's names at load) and carried in the result message; POST /detect's answer and
the MQTT bridge's ON/OFF and confidence read it from the message. A one-class model whose class is not
spelled "deer" (here the demo's IR with its class renamed "blob") raises it on every path; a model with no
deer class and no alert classes named raises it for nothing, never for "any detection"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import DEMO, TEST_REDIS_URL, sample, stop_handlers_kept
from worker.config import load_config
from worker.inference.detections import Detections
from worker.inference.preprocess import Preprocessing
from worker.jobqueue.producer import enqueue_snapshot
from worker.jobqueue.results import ModelInfo, build_message, deer_detected, encode
from worker.model.card import ModelCard
from worker.serve.gateway import detect_answer
from worker.serve.mqtt_bridge import Bridge, best_deer_confidence
from worker.serve.mqtt_config import BridgeConfig
from worker.serve.service import run_worker

ROOT = Path(__file__).resolve().parents[1]
SERVED_IR = DEMO / "deer-yolo26n_dynamic_raw_int8_openvino_model"  # what models/demo's card serves
QUEUE, STREAM = "alert-classes-test", "alert-classes-test:results"


def renamed_model(folder: Path, class_name: str, alert_classes: tuple[str, ...] | None) -> Path:
    """The served demo IR, its one class renamed, with a `deer_worker:` mapping naming `alert_classes`."""
    ir = folder / f"{class_name}_openvino_model"
    shutil.copytree(SERVED_IR, ir)
    meta = yaml.safe_load((ir / "metadata.yaml").read_text())
    meta["names"] = {0: class_name}
    meta["deer_worker"] = ModelCard(preprocessing=Preprocessing(), alert_classes=alert_classes,
                                    confidence=0.25).ir_metadata()
    (ir / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return ir


def served_result(conn, config, jpeg: bytes) -> dict:
    """One snapshot through the queue and a real worker (burst): its result message as streamed."""
    job = enqueue_snapshot(conn, jpeg, "cam1", queue=config.queue)
    with stop_handlers_kept():  # the worker installs its own
        assert run_worker(config, 0, burst=True) == 0
    messages = [json.loads(fields[b"result"]) for _, fields in conn.xrange(config.results_stream)]
    return next(m for m in messages if m["job_id"] == job.id)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ov-cache")  # one compile of the (same) IR for the module


def worker_config(model: Path, cache: Path):
    return load_config(ROOT / "configs" / "worker.yaml", env={}, overrides={
        "redis_url": TEST_REDIS_URL, "model": str(model), "queue": QUEUE, "results_stream": STREAM,
        "results_channel": STREAM, "max_age": 1e12, "metrics_port": 0, "zones": "models/demo/zones.yaml",
        "cache_dir": str(cache), "batch": "1"})


def mqtt_state(message: dict, config) -> list[tuple[str, str | bytes, bool]]:
    """What the MQTT bridge publishes for one result (a real Bridge, no broker needed for this step)."""
    bridge = Bridge(BridgeConfig(redis_url=TEST_REDIS_URL, discovery=False, client_id="alert-classes-test"), config)
    return bridge.result_messages(message["camera_id"], message, encode(message).encode())


def test_a_one_class_blob_model_raises_the_alarm_on_the_queue_gateway_and_mqtt_paths(redis_conn, tmp_path, cache_dir):
    config = worker_config(renamed_model(tmp_path, "blob", ("blob",)), cache_dir)
    message = served_result(redis_conn, config, sample("night_640x360_deer.jpg"))
    assert message["status"] == "ok" and [d["class_name"] for d in message["detections"]] == ["blob"]
    assert message["deer_detected"] is True and message["alert_classes"] == ["blob"]  # the queue result
    answer = detect_answer(message, 0.25)  # POST /detect's body, built from the same message
    assert answer["deer_detected"] is True and answer["num_detections"] == 1
    published = mqtt_state(message, config)
    assert ("deer-worker/cam1/deer", "ON", True) in published
    confidence = next(value for topic, value, _ in published if topic == "deer-worker/cam1/confidence")
    assert float(confidence) == pytest.approx(message["detections"][0]["confidence"], abs=1e-4)
    assert float(confidence) > 0


def test_a_one_class_model_with_no_alert_classes_recorded_alerts_on_its_only_class(redis_conn, tmp_path, cache_dir):
    config = worker_config(renamed_model(tmp_path, "Blob", None), cache_dir)
    message = served_result(redis_conn, config, sample("night_640x360_deer.jpg"))
    assert message["deer_detected"] is True and message["alert_classes"] == ["Blob"]


def test_an_empty_yard_is_no_alarm_on_any_path(redis_conn, tmp_path, cache_dir):
    config = worker_config(renamed_model(tmp_path, "blob", ("blob",)), cache_dir)
    message = served_result(redis_conn, config, sample("night_640x360_empty.jpg"))
    assert message["deer_detected"] is False and not detect_answer(message, 0.25)["deer_detected"]
    assert not any(topic.endswith("/deer") for topic, _, _ in mqtt_state(message, config))


# --- the decision itself, and the readers that must not recompute it --------------------------------------
NAMES = ("person", "dog")


def detections(*class_ids: int, names: tuple[str, ...] = NAMES) -> Detections:
    n = len(class_ids)
    return Detections(np.tile(np.array([[0, 0, 10, 10]], np.float32), (n, 1)), np.full(n, 0.8, np.float32),
                      np.array(class_ids, np.int32), names)


def test_a_model_without_alert_classes_never_alarms_for_any_detection():
    """The old rule, "no class called deer: any detection counts", raised the alarm for a person."""
    info = ModelInfo("m", "1", "int8", "f32", alert_classes=())
    message = build_message(status="ok", job_id="j", camera_id="c", captured_at=None, worker="w", model=info,
                            detections=detections(0, 1))
    assert message["deer_detected"] is False and message["alert_classes"] == []
    assert deer_detected(detections(1), ("dog",)) and not deer_detected(detections(0), ("dog",))
    assert not deer_detected(detections(), ("dog",))


def test_the_gateway_and_the_bridge_read_the_decision_instead_of_recomputing_it():
    # a deer the worker did not alarm for (outside a camera's required zone) stays no alarm
    deer = {"status": "ok", "camera_id": "c", "deer_detected": False, "alert_classes": ["deer"],
            "detections": [{"class_id": 0, "class_name": "deer", "confidence": 0.9, "box": [0, 0, 10, 10]}]}
    assert detect_answer(deer, 0.25)["deer_detected"] is False
    # an alarm for a class not spelled "deer" is an alarm, with that class's confidence
    elk = {**deer, "deer_detected": True, "alert_classes": ["White-tailed deer"],
           "detections": [{**deer["detections"][0], "class_name": "White-tailed deer", "confidence": 0.7}]}
    assert detect_answer(elk, 0.25)["deer_detected"] is True and best_deer_confidence(elk) == 0.7
    # a result of an older worker names no alert classes: the class called deer
    assert best_deer_confidence({k: v for k, v in deer.items() if k != "alert_classes"}) == 0.9
