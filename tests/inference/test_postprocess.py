import numpy as np
import pytest

from worker.inference.postprocess import DetectionFilter, decode_end2end, decode_raw, nms, to_detections
from worker.inference.preprocess import BoxTransform

IDENTITY = BoxTransform(1.0, 1.0, 0, 0, 0, 0, 320, 320, 1.0, 1.0, 320, 320)


def _e2e(rows):
    out = np.zeros((300, 6), np.float32)
    out[: len(rows)] = rows
    return out


def test_end2end_threshold_is_strict_and_keeps_order():
    out = _e2e([[10, 10, 50, 50, 0.9, 0], [20, 20, 60, 60, 0.55, 0], [5, 5, 9, 9, 0.56, 1]])
    boxes, scores, classes = decode_end2end(out, DetectionFilter(confidence=0.55))
    assert scores.tolist() == pytest.approx([0.9, 0.56])
    assert classes.tolist() == [0, 1]


def test_end2end_class_filter_and_max_detections():
    rows = [[i, i, i + 10, i + 10, 0.9 - i * 0.01, i % 2] for i in range(10)]
    _, scores, classes = decode_end2end(_e2e(rows), DetectionFilter(confidence=0.1, classes=(1,), max_detections=3))
    assert classes.tolist() == [1, 1, 1] and len(scores) == 3


def test_nms_suppresses_overlaps_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.8, 0.9, 0.7], np.float32), 0.5)
    assert keep.tolist() == [1, 2]


def test_raw_head_is_class_aware():
    # two identical boxes of different classes both survive; a duplicate of the same class does not
    preds = np.zeros((4 + 2, 3), np.float32)
    preds[:4, :] = np.array([[100, 100, 40, 40]] * 3, np.float32).T
    preds[4:, 0] = [0.9, 0.0]
    preds[4:, 1] = [0.0, 0.8]
    preds[4:, 2] = [0.7, 0.0]
    boxes, scores, classes = decode_raw(preds, DetectionFilter(confidence=0.25, iou=0.65))
    assert classes.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    assert np.allclose(boxes[0], [80, 80, 120, 120])


def test_to_detections_clips_to_the_image():
    out = _e2e([[-5, -5, 400, 100, 0.9, 0]])
    det = to_detections(out, end2end=True, transform=IDENTITY, flt=DetectionFilter(0.5), class_names=("deer",))
    assert det.xyxy.tolist() == [[0, 0, 320, 100]]
    assert det.to_json()[0]["class_name"] == "deer"


@pytest.mark.reference
def test_nms_matches_torchvision_on_random_boxes():
    import torch
    import torchvision

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 300, (500, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (500, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, 500).astype(np.float32)
    for iou in (0.45, 0.65, 0.7):
        theirs = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        assert nms(boxes, scores, iou).tolist() == theirs.tolist()
