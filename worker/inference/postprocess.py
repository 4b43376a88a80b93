"""Raw model output (one image) -> Detections in original pixels.

Two heads: YOLO26 end-to-end (300, 6) rows of x1, y1, x2, y2, score, class (no NMS needed), and the
YOLOv8-style raw head (4 + nc, anchors) of cx, cy, w, h and class scores, which needs NMS. Both follow
ultralytics' `non_max_suppression` so boxes match its predict(): score > conf (strict), best class
per box, class-aware NMS, then max_det.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.constants import DEFAULT_CONFIDENCE, DEFAULT_IOU, DEFAULT_MAX_DETECTIONS
from worker.inference.detections import Detections
from worker.inference.preprocess import BoxTransform

_MAX_NMS_CANDIDATES = 30000
_CLASS_OFFSET = 7680.0  # ultralytics' max_wh: shifts each class's boxes apart so NMS is class-aware


@dataclass(frozen=True)
class DetectionFilter:
    confidence: float = DEFAULT_CONFIDENCE
    iou: float = DEFAULT_IOU
    classes: tuple[int, ...] | None = None  # None keeps all classes
    max_detections: int = DEFAULT_MAX_DETECTIONS


def decode_end2end(output: np.ndarray, flt: DetectionFilter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(300, 6) -> boxes, scores, classes in letterbox pixels."""
    mask = output[:, 4] > flt.confidence
    if flt.classes is not None:
        mask &= np.isin(output[:, 5].astype(np.int64), flt.classes)
    rows = output[mask][: flt.max_detections]
    return rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS; indices of kept boxes, highest score first (as torchvision.ops.nms)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_raw(output: np.ndarray, flt: DetectionFilter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(4 + nc, A) -> boxes, scores, classes in letterbox pixels, after class-aware NMS."""
    class_scores = output[4:]
    best = class_scores.argmax(0)
    scores = class_scores[best, np.arange(class_scores.shape[1])]
    mask = scores > flt.confidence
    if flt.classes is not None:
        mask &= np.isin(best, flt.classes)
    cxcywh, scores, best = output[:4, mask].T, scores[mask], best[mask]
    if scores.size > _MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:_MAX_NMS_CANDIDATES]
        cxcywh, scores, best = cxcywh[top], scores[top], best[top]
    boxes = np.empty_like(cxcywh)
    boxes[:, :2] = cxcywh[:, :2] - cxcywh[:, 2:] / 2
    boxes[:, 2:] = cxcywh[:, :2] + cxcywh[:, 2:] / 2
    keep = nms(boxes + best[:, None] * _CLASS_OFFSET, scores, flt.iou)[: flt.max_detections]
    return boxes[keep], scores[keep], best[keep].astype(np.int32)


def to_detections(output: np.ndarray, *, end2end: bool, transform: BoxTransform, flt: DetectionFilter,
                  class_names: tuple[str, ...]) -> Detections:
    """One image's raw output -> Detections in original-image pixels."""
    boxes, scores, classes = (decode_end2end if end2end else decode_raw)(output, flt)
    if not len(scores):
        return Detections.empty(class_names)
    return Detections(transform.to_original(boxes), scores.astype(np.float32), classes, class_names)
