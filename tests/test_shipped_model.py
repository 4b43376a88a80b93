"""What `deer-worker run` serves out of the box: configs/worker.yaml's `model: models/demo`, the IR its card
chose (raw head + NMS, INT8), with the card's threshold and NMS IoU. Before, the default was the static
end-to-end INT8 IR, which answered one sample with two near-duplicate boxes and scored held-out mAP50 0.833
where the card's IR scores 0.862 on the same 50 images."""

from __future__ import annotations

import itertools

from conftest import DEMO, ROOT, SAMPLES
from worker.cameras import load_camera_book
from worker.config import load_config
from worker.evaluation.dataset import label_path, load_data_yaml, read_labels
from worker.evaluation.gate import evaluate_model
from worker.evaluation.metrics import box_iou
from worker.inference.build import build_detector
from worker.model.card import CARD_FILE, ModelCard

SHIPPED = ROOT / "configs" / "worker.yaml"
NEAR_DUPLICATE_IOU = 0.5  # two same-class boxes overlapping this much are one animal counted twice


def shipped_config():
    return load_config(SHIPPED, env={}, overrides={"zones": "models/demo/zones.yaml"})


def test_the_shipped_config_serves_the_demo_card_ir():
    config = shipped_config()
    card = ModelCard.read(DEMO)
    detector = build_detector(config, batch="1")
    assert config.model == "models/demo" and detector.spec.card == config.resolve("models/demo") / CARD_FILE
    assert detector.spec.xml.parent.name == card.serve and not detector.spec.end2end
    assert (detector.spec.confidence, detector.iou, detector.spec.alert_classes) == (card.confidence, card.iou, ("deer",))


def test_no_near_duplicate_boxes_on_the_samples():
    config = shipped_config()
    detector = build_detector(config, batch="1")
    settings = load_camera_book(config.resolve(config.zones)).get("demo")
    for image in sorted(SAMPLES.glob("*.jpg")):
        found = detector.detect(image.read_bytes(), settings).detections
        iou = box_iou(found.xyxy, found.xyxy)
        for i, j in itertools.combinations(range(len(found)), 2):
            if found.class_id[i] == found.class_id[j]:
                assert iou[i, j] < NEAR_DUPLICATE_IOU, (image.name, found.to_json())


def test_held_out_map50_is_the_cards_within_half_a_point():
    """The served path on the card's own split (the 300 held-out images) against the mAP50 export recorded
    for the served IR (ultralytics val of it)."""
    card = ModelCard.read(DEMO)
    data = load_data_yaml(DEMO / "heldout300.yaml")
    images = data.images("val")
    labels = [read_labels(label_path(i), len(data.names)) for i in images]
    served = evaluate_model(str(DEMO), images, labels, data.names, precision=shipped_config().precision)
    recorded = card.irs[card.serve]["accuracy"]["mAP50"]
    assert abs(served.metrics.map50 - recorded) <= 0.005, (served.metrics.map50, recorded)
