"""Parity with what the user runs today (issue 13 item 5): our detections on the FP32 raw-head IR at
its rect shape vs ultralytics PyTorch `YOLO(pt).predict` (rect by default, f32 on CPU, the same
one-to-many head + NMS, the same conf and IoU), on held-out photos of several aspect ratios: 16:9 and
4:3 (models/demo/heldout), the 16:9 samples at three sizes, 1:1 and odd sizes cut from them. With a
CLAHE model card, CLAHE runs first on the PyTorch side, as in the user's pipeline.

The end-to-end (one-to-one) head too: ultralytics 8.4 selects it for a .pt only through
`predict(nms=False)`. Its predictor builds `AutoBackend(..., end2end=args.nms is False)`, which sets
`model.end2end` to that before fusing (nn/backends/pytorch.py), so a `Detect.end2end = True` set on
the loaded checkpoint is overwritten with False at the default `nms=None`: that is why setting it
changed nothing.

Matching as parity_match: same class, IoU >= 0.99 (or the JSON's 0.1 px rounding), confidence within
0.01, >= 99% both ways."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import DEMO, SAMPLES
from dynamic_models import CHECKPOINT, dynamic_end2end_model, dynamic_raw_model  # noqa: F401 - fixtures
from parity_match import assert_parity
from worker.cameras import CameraSettings
from worker.inference.detector import Detector
from worker.inference.preprocess import Preprocessing, input_shape

pytestmark = pytest.mark.reference
CONF = 0.25
IOU = 0.65
HELDOUT = sorted((DEMO / "heldout" / "images").glob("*.jpg"))[::4]  # 13 of the 50: PyTorch is slow


def _photos() -> list[tuple[str, np.ndarray]]:
    """Every held-out photo plus the samples, and 1:1 and odd-size cuts of them."""
    photos = [(p.name, cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in HELDOUT]
    photos += [(p.name, cv2.imread(str(p), cv2.IMREAD_COLOR)) for p in sorted(SAMPLES.glob("*_deer.*"))]
    for name, image in list(photos[-5:]) + [photos[0]]:
        h, w = image.shape[:2]
        side = min(h, w)
        x0 = (w - side) // 2
        photos.append((f"{name}:1x1", np.ascontiguousarray(image[:, x0 : x0 + side])))
        oh, ow = h * 7 // 9 + 3, w * 5 // 7 + 1  # odd sizes, a cut and a resize off the usual ratios
        photos.append((f"{name}:cut{ow}x{oh}", np.ascontiguousarray(image[h - oh :, :ow])))
        photos.append((f"{name}:resize", cv2.resize(image, (w * 3 // 5 + 1, h * 4 // 7 + 3))))
    return photos


def _users_clahe(bgr: np.ndarray, clip: float, tiles: tuple[int, int]) -> np.ndarray:
    """The user's own pipeline, written out apart from ours: RGB -> LAB, CLAHE on L, back."""
    lab = cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cv2.COLOR_RGB2LAB)
    lightness, a, b = cv2.split(lab)
    lightness = cv2.createCLAHE(clipLimit=clip, tileGridSize=tiles).apply(lightness)
    return cv2.cvtColor(cv2.cvtColor(cv2.merge([lightness, a, b]), cv2.COLOR_LAB2RGB), cv2.COLOR_RGB2BGR)


def _pytorch(images: list[np.ndarray], preprocessing: Preprocessing | None, *, end2end: bool = False):
    """end2end: predict(nms=False), the one-to-one head (no NMS); else the default one-to-many head + NMS."""
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    model = YOLO(str(CHECKPOINT), task="detect")
    head = {"nms": False} if end2end else {}
    out = []
    for image in images:
        if preprocessing is not None and preprocessing.clahe:
            image = _users_clahe(image, preprocessing.clahe_clip, preprocessing.clahe_tiles)
        r = model.predict(image, imgsz=320, conf=CONF, iou=IOU, half=False, device="cpu", verbose=False,
                          **head)[0].boxes
        out.append((r.xyxy.numpy(), r.conf.numpy(), r.cls.numpy().astype(int)))
    return out


def _ours(detector, images):
    results = detector.detect_batch([(image, CameraSettings(confidence=CONF)) for image in images])
    return [(r.detections.xyxy, r.detections.confidence, r.detections.class_id) for r in results]


@pytest.fixture(scope="module")
def photos():
    return _photos()


def test_the_photos_cover_several_aspect_ratios(photos):
    shapes = {input_shape(*image.shape[:2], 320) for _, image in photos}
    assert {(192, 320), (256, 320), (320, 320)} <= shapes and len(shapes) >= 4, shapes


def test_rect_raw_head_matches_pytorch_predict(dynamic_raw_model, photos):
    detector = Detector(dynamic_raw_model, batch="4", iou=IOU, shapes=["16x9"])
    assert detector.spec.dynamic and not detector.spec.end2end and detector.precision == "f32"
    images = [image for _, image in photos]
    assert_parity(_ours(detector, images), _pytorch(images, None), CONF, min_detections=40)


def test_rect_end2end_head_matches_pytorch_predict_with_nms_false(dynamic_end2end_model, photos):
    detector = Detector(dynamic_end2end_model, batch="4", shapes=["16x9"])
    assert detector.spec.dynamic and detector.spec.end2end and detector.precision == "f32"
    images = [image for _, image in photos]
    assert_parity(_ours(detector, images), _pytorch(images, None, end2end=True), CONF, min_detections=40)


def test_a_clahe_model_card_matches_pytorch_on_clahe_pixels(dynamic_raw_model, photos, tmp_path):
    """The card's CLAHE (its own clip and tiles) runs in the worker as the user runs it before predict."""
    folder = tmp_path / "export"
    shutil.copytree(dynamic_raw_model, folder / "raw")
    preprocessing = {"clahe": True, "clahe_clip": 3.0, "clahe_tiles": [8, 8], "data_preprocessed": False}
    (folder / "MODEL_CARD.json").write_text(json.dumps({"name": "demo", "version": "demo clahe", "serve": "raw",
                                                        "preprocessing": preprocessing}))
    detector = Detector(folder, batch="1", iou=IOU, shapes=["16x9"])
    assert detector.spec.preprocessing == Preprocessing(True, 3.0, (8, 8))
    images = [image for _, image in photos[::4]]
    assert_parity(_ours(detector, images), _pytorch(images, detector.spec.preprocessing), CONF,
                  min_detections=10)
