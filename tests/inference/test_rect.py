"""Rectangular inputs (issue 13 item 4): each snapshot runs at the shape ultralytics PyTorch `predict`
gives it, on a dynamic-shape IR compiled per (shape, batch); the model's own preprocessing; the
prepare/run split the consumer overlaps."""

from __future__ import annotations

import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from conftest import DEMO_CONF, FP32_MODEL, SAMPLES, sample
from dynamic_models import dynamic_end2end_model, dynamic_raw_model  # noqa: F401 - fixtures
from worker.cameras import CameraBook, CameraSettings
from worker.errors import ConfigError, ModelLoadError, UnsupportedFormatError
from worker.inference.detector import Detector
from worker.inference.imagecodec import DecodedImage
from worker.inference.runtime import CompiledRunner, CompileOptions, ConcurrentRunner
from worker.inference.preprocess import Preprocessing, input_shape, min_input_side, prepare_rect

_rng = np.random.default_rng(13)
# Many odd sizes with aspect ratios up to 4:1 either way (beyond that the minimum side applies),
# smaller and larger than imgsz (ultralytics scales up too).
ODD_SIZES = sorted({(int(h), int(w)) for h, w in _rng.integers(7, 1000, (120, 2)) if max(h, w) <= 4 * min(h, w)}
                   # where scaling to fit the padded shape, not imgsz, puts the image a pixel off (at 320)
                   | {(22, 73), (25, 83), (28, 93), (31, 103)})
_BASE = np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), np.uint8)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)


@pytest.mark.parametrize("imgsz", [320, 640])
def test_known_shapes_are_ultralytics_rect_shapes(imgsz):
    scale = imgsz // 320
    assert input_shape(1080, 1920, imgsz) == (192 * scale, 320 * scale)  # 16:9 -> 384x640 at 640
    assert input_shape(480, 640, imgsz) == (256 * scale - 16 * (scale - 1) * 2, 320 * scale)  # 4:3 -> 480x640
    assert input_shape(500, 500, imgsz) == (imgsz, imgsz)


@pytest.mark.reference
@pytest.mark.parametrize("imgsz", [320, 640])
def test_rect_letterbox_equals_ultralytics_for_odd_sizes(imgsz):
    """Pixel for pixel what ultralytics' predict letterbox (LetterBox(auto=True, stride=32)) makes."""
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics.data.augment import LetterBox

    letterbox = LetterBox((imgsz, imgsz), auto=True, stride=32)
    for h, w in ODD_SIZES:
        image = np.ascontiguousarray(_BASE[:h, :w])
        theirs = letterbox(image=image)
        ours, transform = prepare_rect(DecodedImage(image, w, h), imgsz)
        assert ours.shape == theirs.shape, (h, w)
        assert np.array_equal(ours, theirs), (h, w)


@pytest.fixture(scope="module")
def cache_options(tmp_path_factory):
    """A compiled-model cache shared by this module's detectors: one compile per (shape, batch)."""
    return CompileOptions(cache_dir=str(tmp_path_factory.mktemp("ov-cache")))


@pytest.fixture(scope="module")
def rect_detector(dynamic_end2end_model, cache_options):
    return Detector(dynamic_end2end_model, batch="4", shapes=["16x9"], options=cache_options)


def test_extreme_aspect_ratios_keep_a_minimum_input_side(rect_detector):
    """A 4000x100 snapshot would get a 32x320 input (210 anchors, under the end-to-end head's 300 top-k)."""
    assert input_shape(100, 4000, 320) == (min_input_side(320), 320) == (96, 320)
    assert input_shape(4000, 100, 640) == (640, min_input_side(640)) == (640, 160)
    detector = rect_detector
    for h, w in ((100, 4000), (4000, 100), (7, 3000)):
        result = detector.detect(_image(h, w), CameraSettings(confidence=DEMO_CONF))
        assert (result.image_width, result.image_height) == (w, h)
        assert ((dynamic_shape := input_shape(h, w, 320)), 1) in detector.runners, dynamic_shape


def _split_sizes():
    return [(1080, 1920), (480, 640), (500, 500), (360, 640), (720, 960), (720, 1280)]


def test_a_mixed_aspect_batch_is_split_by_shape_and_each_runs_at_its_own_shape(rect_detector, monkeypatch):
    images = [_image(h, w, seed=i) for i, (h, w) in enumerate(_split_sizes())]
    images[0] = cv2.imread(str(SAMPLES / "day_1920x1080_deer.jpg"))
    prepared = rect_detector.prepare_batch([(image, None) for image in images])
    assert {shape: [item.index for item in items] for shape, items in prepared.groups.items()} == {
        (192, 320): [0, 3, 5], (256, 320): [1, 4], (320, 320): [2]}
    assert rect_detector.warmups[(192, 320)].pad_partial_from is not None  # 16:9 was warmed at batch 4 too
    for shape, items in prepared.groups.items():
        assert all(item.tensor.shape == (*shape, 3) for item in items)
    seen = []
    infer = CompiledRunner.infer

    def spy(runner, tensor):
        assert tensor.shape[1:3] == runner.shape  # run by a model compiled at that shape, no square staging
        seen.append(tensor.shape)
        return infer(runner, tensor)

    infer_parts = ConcurrentRunner.infer_parts

    def spy_parts(runner, parts):
        for part in parts:
            assert part.shape[1:3] == runner.shape
            seen.append(part.shape)
        return infer_parts(runner, parts)

    monkeypatch.setattr(CompiledRunner, "infer", spy)
    monkeypatch.setattr(ConcurrentRunner, "infer_parts", spy_parts)
    results = rect_detector.run_prepared(prepared)
    monkeypatch.undo()
    # one run per shape group (16:9 at batch 4 where warm-up says 3 pay, or as two halves of 2 on two
    # streams where the process has two cores; the others, unwarmed, one by one)
    assert {s[1:3] for s in seen} == set(prepared.groups)
    assert all(len(s) == 4 and s[0] in (1, 2, 4) for s in seen) and sum(s[0] == 1 for s in seen) >= 3
    assert all(not isinstance(r, Exception) for r in results)
    singles = [rect_detector.detect(image, CameraSettings(confidence=DEMO_CONF)) for image in images]
    batch = rect_detector.detect_batch([(image, CameraSettings(confidence=DEMO_CONF)) for image in images])
    for got, want in zip(batch, singles):
        assert np.allclose(got.detections.xyxy, want.detections.xyxy, atol=0.5)
        assert np.allclose(got.detections.confidence, want.detections.confidence, atol=1e-3)
    assert len(singles[0].detections) >= 1  # the deer sample has its deer at 16:9


def test_configured_shapes_are_compiled_and_warmed_before_the_first_snapshot(dynamic_end2end_model, cache_options):
    detector = Detector(dynamic_end2end_model, batch="1", shapes=["1920x1080", "4x3", "16x9"], options=cache_options)
    assert detector.warm_shapes == [(192, 320), (256, 320)]
    assert set(detector.runners) == {((192, 320), 1), ((256, 320), 1)}
    assert set(detector.warmups) == {(192, 320), (256, 320)}


def test_prepared_batches_own_their_tensors(rect_detector):
    """Batch N+1 is prepared while batch N waits to run: N's tensors must stay N's."""
    first = rect_detector.prepare_batch([(sample("day_640x360_deer.jpg"), CameraSettings(confidence=DEMO_CONF))])
    expected = rect_detector.run_prepared(rect_detector.prepare_batch(
        [(sample("day_640x360_deer.jpg"), CameraSettings(confidence=DEMO_CONF))]))[0]
    second = rect_detector.prepare_batch([(sample("day_1920x1080_empty.jpg"), None),
                                          (sample("night_640x360_empty.jpg"), None)])
    got = rect_detector.run_prepared(first)[0]
    rect_detector.run_prepared(second)
    assert len(expected.detections) >= 1
    assert np.array_equal(got.detections.xyxy, expected.detections.xyxy)


def test_bad_items_fail_alone_in_a_prepared_batch(rect_detector):
    prepared = rect_detector.prepare_batch([(b"not an image", None), (sample("day_640x360_deer.jpg"), None)])
    assert isinstance(prepared.errors[0], UnsupportedFormatError) and 1 not in prepared.errors
    results = rect_detector.run_prepared(prepared)
    assert isinstance(results[0], UnsupportedFormatError) and not isinstance(results[1], Exception)


def test_each_item_keeps_its_own_confidence_and_classes(rect_detector):
    snapshot = sample("day_640x360_deer.jpg")
    low, high, none = rect_detector.detect_batch([
        (snapshot, CameraSettings(confidence=0.05)), (snapshot, CameraSettings(confidence=0.95)),
        (snapshot, CameraSettings(confidence=0.05, classes=("deer",)))])
    assert len(low.detections) >= 1 and len(high.detections) == 0
    assert len(none.detections) == len(low.detections)


def test_a_static_ir_serves_square_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        detector = Detector(FP32_MODEL, shapes=["16x9", "4x3"])
    assert "Re-export it with dynamic shapes" in caplog.text
    assert detector.warm_shapes == [(320, 320)]
    prepared = detector.prepare_batch([(sample("day_640x360_deer.jpg"), None)])
    assert list(prepared.groups) == [(320, 320)]


# --- the model's own preprocessing ---------------------------------------------------------------
def _card_folder(tmp_path, ir, preprocessing, confidence=0.4, iou=0.65):
    folder = tmp_path / "export"
    shutil.copytree(ir, folder / "served_ir")
    card = {"name": "deer-yolo26n", "version": "demo v9", "serve": "served_ir", "imgsz": 320,
            "preprocessing": preprocessing, "deer_class": "deer", "confidence": confidence, "iou": iou}
    (folder / "MODEL_CARD.json").write_text(json.dumps(card))
    return folder


CLAHE_3 = {"clahe": True, "clahe_clip": 3.0, "clahe_tiles": [4, 4], "data_preprocessed": False}


@pytest.fixture(scope="module")
def card_detector(tmp_path_factory, dynamic_end2end_model, cache_options):
    return Detector(_card_folder(tmp_path_factory.mktemp("card"), dynamic_end2end_model, CLAHE_3), shapes=["16x9"],
                    options=cache_options)


def test_an_export_folder_serves_its_card_ir_with_the_models_preprocessing(card_detector):
    detector = card_detector
    assert detector.spec.version == "demo v9" and detector.spec.xml.parent.name == "served_ir"
    assert detector.spec.preprocessing == Preprocessing(True, 3.0, (4, 4))
    snapshot = sample("day_640x360_deer.jpg")
    image = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR)
    clahe_tensor, _ = prepare_rect(DecodedImage(image, 640, 360), 320, preprocessing=Preprocessing(True, 3.0, (4, 4)))
    for settings in (None, CameraSettings(camera_id="unknown")):  # no camera id, and a camera that sets nothing
        item = detector.prepare_batch([(snapshot, settings)]).groups[(192, 320)][0]
        assert np.array_equal(item.tensor, clahe_tensor)
        assert item.settings.confidence == 0.4  # the card's threshold where the camera sets none
    forced = detector.prepare_batch([(snapshot, CameraSettings(clahe=False, force_preprocessing=True))])
    assert not np.array_equal(forced.groups[(192, 320)][0].tensor, clahe_tensor)


@pytest.mark.parametrize("camera", [CameraSettings(camera_id="cam", clahe=False),
                                    CameraSettings(camera_id="cam", clahe_clip=2.0),
                                    CameraSettings(camera_id="cam", clahe=True, clahe_tiles=(8, 8))])
def test_a_camera_contradicting_the_model_is_refused_at_load_unless_forced(card_detector, camera):
    detector = card_detector
    with pytest.raises(ConfigError, match="camera cam: .*contradicts what the model was trained with.*force_preprocessing"):
        detector.check_cameras(CameraBook(CameraSettings(), {"cam": camera}))
    from dataclasses import replace

    detector.check_cameras(CameraBook(CameraSettings(), {"cam": replace(camera, force_preprocessing=True)}))
    detector.check_cameras(CameraBook(CameraSettings(), {"cam": CameraSettings(camera_id="cam", clahe=True,
                                                                              clahe_clip=3.0)}))


def test_the_model_cards_iou_is_the_nms_default_unless_the_config_sets_one(tmp_path, dynamic_raw_model, cache_options):
    """export records the NMS IoU the raw head is served with; `iou: 0` (the shipped config) follows it."""
    from worker.config import load_config
    from worker.constants import DEFAULT_IOU
    from worker.inference.build import build_detector

    folder = _card_folder(tmp_path, dynamic_raw_model, {"clahe": False}, iou=0.45)
    settings = {"model": str(folder), "shapes": ["1x1"], "batch": "1", "cache_dir": cache_options.cache_dir}
    assert load_config(env={}, overrides=settings).iou == 0
    assert build_detector(load_config(env={}, overrides=settings)).iou == 0.45
    assert build_detector(load_config(env={}, overrides={**settings, "iou": 0.7})).iou == 0.7
    assert build_detector(load_config(env={}, overrides=settings), model=dynamic_raw_model).iou == DEFAULT_IOU  # no card
    card = json.loads((folder / "MODEL_CARD.json").read_text())
    (folder / "MODEL_CARD.json").write_text(json.dumps({**card, "iou": 1.5}))
    with pytest.raises(ModelLoadError, match=r"iou: expected a number in \(0, 1\], got 1.5"):
        Detector(folder, shapes=["1x1"], options=cache_options)


def test_a_bare_ir_knows_its_preprocessing_from_metadata(tmp_path, dynamic_end2end_model, cache_options):
    import yaml

    ir = tmp_path / "ir"
    shutil.copytree(dynamic_end2end_model, ir)
    meta = yaml.safe_load((ir / "metadata.yaml").read_text())
    meta["deer_worker"] = {"preprocessing": CLAHE_3, "deer_class": "deer", "confidence": 0.3}
    (ir / "metadata.yaml").write_text(yaml.safe_dump(meta))
    detector = Detector(ir, shapes=["1x1"], options=cache_options)
    assert detector.spec.preprocessing == Preprocessing(True, 3.0, (4, 4)) and detector.spec.confidence == 0.3
    meta["deer_worker"]["preprocessing"] = {"clahe": True}  # a clip never assumed
    (ir / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match="clahe_clip is not recorded"):
        Detector(ir, shapes=["1x1"], options=cache_options)
