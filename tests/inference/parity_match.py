"""Matching two detectors' outputs box by box, for the parity tests (test_parity against ultralytics
on the IR, test_parity_pt against PyTorch predict).

A detection matches when the class is the same, IoU >= 0.99 (or every corner within the JSON's 0.1 px
rounding) and the confidences differ by <= 0.01; >= 99% must match, both ways. Only detections clear
of the threshold by 0.01 count, so a score sitting on it cannot flip the result."""

from __future__ import annotations

import numpy as np


def iou(a, b):
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def one_way(src, dst, conf: float) -> tuple[int, int]:
    """(matched, counted) detections of `src` found in `dst`; each side is (xyxy, confidence, class)."""
    (boxes, scores, classes), (dboxes, dscores, dclasses) = src, dst
    matched = total = 0
    for box, score, k in zip(boxes, scores, classes):
        if score <= conf + 0.01:
            continue
        total += 1
        same = dclasses == k
        if same.any():
            ious = iou(box, dboxes[same])
            best = ious.argmax()
            close = ious[best] >= 0.99 or np.abs(dboxes[same][best] - box).max() <= 0.1
            matched += bool(close and abs(dscores[same][best] - score) <= 0.01)
    return matched, total


def assert_parity(ours, theirs, conf: float, min_detections: int = 4) -> tuple[int, int]:
    matched = total = 0
    for o, t in zip(ours, theirs):
        for m, n in (one_way(t, o, conf), one_way(o, t, conf)):
            matched, total = matched + m, total + n
    assert total >= min_detections, f"too few detections ({total}) for parity to mean anything"
    assert matched / total >= 0.99, f"{matched}/{total} detections match"
    return matched, total
