"""Parity with the reference implementation: our detector vs ultralytics `YOLO(ir_dir).predict()` on
the same IR and images (parity_match: same class, IoU >= 0.99, confidence within 0.01, >= 99% both
ways), at batch 1 and batch 4, with and without ROI, for the end-to-end and the raw (NMS) head.

Both sides run the IR pinned to f32 (ultralytics would let this CPU pick bf16, so its compile call
is wrapped to add the same hint ours uses); only detections clear of the threshold by 0.01 count,
so a score sitting on the threshold cannot flip the result."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import FP32_MODEL, INT8_MODEL, RAW_MODEL, SAMPLES
from parity_match import assert_parity
from worker.cameras import CameraSettings
from worker.inference.detector import Detector
from worker.inference.preprocess import Roi
from worker.tools.reference import others_compile_pinned, ultralytics_predict

pytestmark = pytest.mark.reference
CONF = 0.25
IOU = 0.65
IMAGES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
ROI = Roi(0.05, 0.1, 0.8, 0.85, normalized=True)


@pytest.fixture(scope="module", autouse=True)
def ultralytics_pinned_f32():
    with others_compile_pinned("f32"):
        yield


def _reference(model_dir, images: list[np.ndarray]):
    return ultralytics_predict(model_dir, images, 320, CONF, IOU)


def _assert_parity(ours, theirs, min_detections=4):
    return assert_parity(ours, theirs, CONF, min_detections)


def _ours(result):
    d = result.detections
    return d.xyxy, d.confidence, d.class_id


def _decode_all():
    return [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in IMAGES]


@pytest.fixture(scope="module")
def f32_detector():
    return Detector(FP32_MODEL, batch="4", iou=IOU)


@pytest.mark.parametrize("reduced", [False, True], ids=["full-decode", "reduced-decode"])
def test_batch1_matches_ultralytics(f32_detector, reduced):
    saved, f32_detector.reduced_decode = f32_detector.reduced_decode, reduced
    try:
        ours = [_ours(f32_detector.detect(p.read_bytes(), CameraSettings(confidence=CONF))) for p in IMAGES]
    finally:
        f32_detector.reduced_decode = saved
    # Reduced decode changes pixels: the v2 demo model's scores moved by more than 0.01 with it (outside
    # parity, why the worker's default is the full decode); the v3 demo model (2026-11-30), surer of its
    # boxes, stays within parity on these samples, so both decodes are held to it.
    _assert_parity(ours, _reference(FP32_MODEL, _decode_all()))


def test_batch4_matches_ultralytics(f32_detector):
    items = [(p.read_bytes(), CameraSettings(confidence=CONF)) for p in IMAGES[:4]]
    results = f32_detector.detect_batch(items)
    assert all(r.batch_size == 4 for r in results)
    _assert_parity([_ours(r) for r in results], _reference(FP32_MODEL, _decode_all()[:4]), min_detections=2)


def test_roi_matches_ultralytics_on_the_crop(f32_detector):
    settings = CameraSettings(confidence=CONF, roi=ROI)
    ours = [_ours(f32_detector.detect(p.read_bytes(), settings)) for p in IMAGES]
    crops, offsets = [], []
    for image in _decode_all():
        x0, y0, x1, y1 = ROI.to_pixels(image.shape[1], image.shape[0])
        crops.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
        offsets.append(np.array([x0, y0, x0, y0], np.float32))
    theirs = [(b + off, c, k) for (b, c, k), off in zip(_reference(FP32_MODEL, crops), offsets)]
    _assert_parity(ours, theirs)


def test_raw_head_with_nms_matches_ultralytics():
    detector = Detector(RAW_MODEL, batch="1", iou=IOU)
    assert not detector.spec.end2end
    ours = [_ours(detector.detect(p.read_bytes(), CameraSettings(confidence=CONF))) for p in IMAGES]
    _assert_parity(ours, _reference(RAW_MODEL, _decode_all()))


def test_int8_matches_ultralytics():
    detector = Detector(INT8_MODEL, batch="1", iou=IOU)
    assert detector.spec.weights == "int8"
    ours = [_ours(detector.detect(p.read_bytes(), CameraSettings(confidence=CONF))) for p in IMAGES]
    _assert_parity(ours, _reference(INT8_MODEL, _decode_all()))
