import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import DEMO_CONF, FP32_MODEL, ROOT, deer_samples, empty_samples, png_header_only, sample
from worker.cameras import CameraSettings
from worker.errors import ConfigError, CorruptImageError, EmptyInputError, ImageTooLargeError, RoiError
from worker.inference.preprocess import Roi


@pytest.mark.parametrize("path", deer_samples(), ids=lambda p: p.name)
def test_finds_the_deer_in_deer_samples(fp32_detector, path):
    result = fp32_detector.detect(path.read_bytes(), confidence=DEMO_CONF)
    assert len(result.detections) >= 1 and result.detections.class_names == ("deer",)
    w, h = result.image_width, result.image_height
    boxes = result.detections.xyxy
    assert (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all() and (boxes >= 0).all()


@pytest.mark.parametrize("path", empty_samples(), ids=lambda p: p.name)
def test_no_deer_in_empty_samples(fp32_detector, path):
    assert len(fp32_detector.detect(path.read_bytes(), confidence=DEMO_CONF).detections) == 0


INT8_FLOOR = 0.10  # INT8 moves a score by up to ~0.1 here (0.554 -> 0.451): matches are looked for down to this
INT8_SCORE_DRIFT = 0.15


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(2)
    area = lambda x: (x[:, 2:] - x[:, :2]).clip(0).prod(1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def _unmatched(found, reference) -> list[str]:
    """Boxes of `found` with no box of `reference` at IoU >= 0.5 and a score within INT8_SCORE_DRIFT."""
    if not len(found):
        return []
    if not len(reference):
        return [f"{s:.3f} (nothing to match)" for s in found.confidence]
    iou = _iou(found.xyxy, reference.xyxy)
    close = np.abs(found.confidence[:, None] - reference.confidence[None, :]) <= INT8_SCORE_DRIFT
    return [f"{s:.3f}" for s, ok in zip(found.confidence, ((iou >= 0.5) & close).any(1)) if not ok]


@pytest.mark.parametrize("path", deer_samples() + empty_samples(), ids=lambda p: p.name)
def test_int8_agrees_with_fp32_box_for_box(fp32_detector, int8_detector, path):
    """Every box either model reports at the working threshold, weak ones included, is found by the
    other at the same place (IoU >= 0.5) with a score within 0.15, looked for down to 0.10 so a score
    that crosses the threshold is still compared rather than skipped."""
    data = path.read_bytes()
    fp32, int8 = (d.detect(data, confidence=DEMO_CONF).detections for d in (fp32_detector, int8_detector))
    fp32_low, int8_low = (d.detect(data, confidence=INT8_FLOOR).detections for d in (fp32_detector, int8_detector))
    assert not _unmatched(fp32, int8_low), f"FP32 boxes INT8 lacks: {_unmatched(fp32, int8_low)}"
    assert not _unmatched(int8, fp32_low), f"INT8 boxes FP32 lacks: {_unmatched(int8, fp32_low)}"
    if path in empty_samples():
        assert len(fp32) == len(int8) == 0


@pytest.mark.parametrize("clahe", [False, True])
def test_batch_results_equal_single_results(fp32_detector, clahe):
    # A batch is decoded and letterboxed on several threads (where the process has the cores), one
    # snapshot at a time otherwise: the results must not tell.
    data = [p.read_bytes() for p in deer_samples()[:4]]
    settings = CameraSettings(confidence=DEMO_CONF, clahe=clahe)
    batch = fp32_detector.detect_batch([(d, settings) for d in data])
    assert [r.batch_size for r in batch] == [4] * 4
    if clahe:  # the setting reached the batch path: CLAHE moves the demo model's scores (0.721 -> 0.604)
        plain = fp32_detector.detect_batch([(d, CameraSettings(confidence=DEMO_CONF)) for d in data])
        assert any(not np.allclose(p.detections.confidence[:1], r.detections.confidence[:1], atol=0.01)
                   for p, r in zip(plain, batch))
    for d, r in zip(data, batch):
        single = fp32_detector.detect(d, settings)
        # the demo model finds a deer in each of these with or without CLAHE (scores 0.29-0.72)
        assert single.batch_size == 1 and len(single.detections) == len(r.detections) >= 1
        assert np.allclose(single.detections.xyxy, r.detections.xyxy, atol=1.0)
        assert np.allclose(single.detections.confidence, r.detections.confidence, atol=0.01)


def _counting_parts(detector, monkeypatch) -> list[int]:
    """Patches each concurrent runner to record how many parts each call ran."""
    calls: list[int] = []
    for runner in detector.concurrent.values():
        real = runner.infer_parts
        monkeypatch.setattr(runner, "infer_parts", lambda parts, real=real: calls.append(len(parts)) or real(parts))
    return calls


def test_a_batch_of_three_or_four_runs_as_two_concurrent_halves_with_the_one_stream_results(fp32_detector,
                                                                                           monkeypatch):
    # Under a backlog a drained batch runs as two half batches on two streams: the same detections as
    # the one-stream batch-4 model, each at its own snapshot's place (the images differ in size and boxes).
    from worker.inference.detector import Detector

    assert len(os.sched_getaffinity(0)) < 2 or fp32_detector.concurrent, "two cores and batch 4: the path is on"
    if not fp32_detector.concurrent:
        pytest.skip("one core: nothing to split")
    one_stream = Detector(FP32_MODEL, batch="4", concurrent=False)
    assert one_stream.concurrent == {}
    calls = _counting_parts(fp32_detector, monkeypatch)
    data = [p.read_bytes() for p in deer_samples()[:4]]
    settings = CameraSettings(confidence=DEMO_CONF)
    for n in (4, 3):
        items = [(d, settings) for d in data[:n]]
        got, want = fp32_detector.detect_batch(items), one_stream.detect_batch(items)
        assert [r.batch_size for r in got] == [n] * n
        for g, w in zip(got, want):
            assert (g.image_width, g.image_height) == (w.image_width, w.image_height)
            assert len(g.detections) == len(w.detections) >= 1
            assert np.allclose(g.detections.xyxy, w.detections.xyxy, atol=0.5)
            assert np.allclose(g.detections.confidence, w.detections.confidence, atol=0.005)
    assert calls == [2, 2]
    fp32_detector.detect_batch([(data[0], settings), (data[1], settings)])  # two: the batch-4 or 1-by-1 path
    assert calls == [2, 2]


def test_a_failing_infer_request_fails_only_its_half_of_the_batch(fp32_detector, monkeypatch):
    if not fp32_detector.concurrent:
        pytest.skip("one core: nothing to split")

    class FailingRequest:
        def start_async(self, inputs, share_inputs=False):
            pass

        def wait(self):
            raise RuntimeError("infer request failed")

    runner = next(iter(fp32_detector.concurrent.values()))
    monkeypatch.setattr(runner, "requests", [runner.requests[0], FailingRequest(), *runner.requests[2:]])
    data = [p.read_bytes() for p in deer_samples()[:4]]
    settings = CameraSettings(confidence=DEMO_CONF)
    results = fp32_detector.detect_batch([(d, settings) for d in data])
    assert [type(r).__name__ for r in results] == ["DetectionResult", "DetectionResult", "RuntimeError", "RuntimeError"]
    assert all(len(r.detections) >= 1 for r in results[:2])
    monkeypatch.undo()  # the request works again: the next batch is whole
    assert all(len(r.detections) >= 1 for r in fp32_detector.detect_batch([(d, settings) for d in data]))


def test_one_inference_thread_keeps_the_one_stream_batch(fp32_detector):
    # A pool of one-thread workers (two on 2 cores) has nothing to split: no second compiled model.
    from worker.inference.detector import Detector
    from worker.inference.runtime import CompileOptions

    assert Detector(FP32_MODEL, batch="4", options=CompileOptions(threads=1)).concurrent == {}


def test_a_bad_image_in_a_batch_fails_alone(fp32_detector):
    good = sample("day_640x360_deer.jpg")
    settings = CameraSettings(confidence=DEMO_CONF)
    results = fp32_detector.detect_batch([(good, settings), (b"", settings), (good[:2000], settings), (good, settings)])
    assert isinstance(results[1], EmptyInputError) and isinstance(results[2], CorruptImageError)
    assert len(results[0].detections) == len(results[3].detections) >= 1


def test_decoded_arrays_are_accepted(fp32_detector):
    import cv2

    image = cv2.imread(str(ROOT / "models/demo/samples/day_640x360_deer.jpg"))
    assert len(fp32_detector.detect(image, confidence=DEMO_CONF).detections) >= 1
    with pytest.raises(ImageTooLargeError):
        fp32_detector.max_pixels, saved = 100, fp32_detector.max_pixels
        try:
            fp32_detector.detect(image)
        finally:
            fp32_detector.max_pixels = saved


def test_bad_inputs_raise_typed_errors(fp32_detector):
    with pytest.raises(ImageTooLargeError):
        fp32_detector.detect(png_header_only(20000, 20000))
    with pytest.raises(RoiError):
        fp32_detector.detect(sample("day_640x360_deer.jpg"), CameraSettings(roi=Roi(600, 0, 100, 100)))


def test_unknown_class_filter_is_a_config_error(fp32_detector):
    with pytest.raises(ConfigError, match="not in the model"):
        fp32_detector.detect(sample("day_640x360_deer.jpg"), CameraSettings(classes=("person",)))


def test_the_worker_path_never_imports_torch():
    code = ("import sys; from worker.inference.detector import Detector; import worker.jobqueue.consumer, worker.serve.service, worker.serve.pool;"
            f"d = Detector({str(ROOT / 'models/demo/deer-yolo26n_int8_openvino_model')!r});"
            f"d.detect(open({str(ROOT / 'models/demo/samples/day_640x360_deer.jpg')!r}, 'rb').read());"
            "bad = [m for m in ('torch', 'ultralytics', 'nncf') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
