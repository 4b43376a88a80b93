"""Detection metrics computed the way ultralytics' DetMetrics does (mAP50, mAP50-95, P, R), in numpy.

Follows ultralytics 8.4 step by step, so `deer-worker validate` and `YOLO(...).val()` can be compared:
- matching (`DetectionValidator.match_predictions`): predictions in descending confidence each take the
  best still-unclaimed ground truth of their class, separately at each IoU threshold 0.50:0.95:0.05;
- AP (`compute_ap`): precision envelope, sampled at 101 recall points by linear interpolation
  (np.interp) and integrated with the trapezoid rule;
- P and R (`ap_per_class`): read at the confidence where the smoothed class-mean F1 curve peaks;
- only classes with at least one ground-truth box count towards the means.
Datasets (label files, data yamls) are read by dataset.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.inference.detections import Detections

# float32 because ultralytics builds them with torch.linspace; a float64 0.55 would flip IoU == 0.55 ties.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).astype(np.float32)
_AP_X = np.linspace(0, 1, 101)  # COCO's 101 recall points
_CURVE_X = np.linspace(0, 1, 1000)  # confidence grid of the P, R and F1 curves
_EPS = 1e-16
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # np.trapz is deprecated in numpy 2

# --- matching -------------------------------------------------------------------------------------
def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """(N, 4) x (M, 4) xyxy -> (N, M) IoU in float32, as ultralytics.utils.metrics.box_iou."""
    a = np.asarray(boxes1, np.float32)[:, None, :]
    b = np.asarray(boxes2, np.float32)[None, :, :]
    wh = (np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2])).clip(0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a + area_b - inter + np.float32(eps))


def match_predictions(pred_classes: np.ndarray, true_classes: np.ndarray, iou: np.ndarray,
                      thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """(N,) predictions in descending confidence, (M,) truths, (M, N) IoU -> (N, T) bool "correct".

    Greedy, per threshold: a prediction takes the unclaimed same-class truth it overlaps most.
    """
    correct = np.zeros((len(pred_classes), len(thresholds)), dtype=bool)
    if not len(pred_classes) or not len(true_classes):
        return correct
    iou = iou * (np.asarray(true_classes)[:, None] == np.asarray(pred_classes)[None, :])
    claimed = np.zeros((iou.shape[0], len(thresholds)), dtype=bool)
    columns = np.arange(len(thresholds))
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(claimed, 0, iou[:, j, None])
        best = available.argmax(0)
        correct[j] = available[best, columns] >= thresholds
        claimed[best, columns] |= correct[j]
    return correct


# --- AP, P, R -------------------------------------------------------------------------------------
def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope: 101-point np.interp, trapezoid rule (ultralytics' compute_ap)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(_trapezoid(np.interp(_AP_X, mrec, mpre), _AP_X))


def _smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter `fraction` of the length wide, edges padded with the end values (ultralytics' smooth)."""
    nf = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(nf // 2)
    return np.convolve(np.concatenate((pad * y[0], y, pad * y[-1])), np.ones(nf) / nf, mode="valid")


@dataclass(frozen=True)
class ApResult:
    classes: np.ndarray  # (C,) class ids that have ground truth, ascending
    instances: np.ndarray  # (C,) ground-truth boxes per class
    precision: np.ndarray  # (C,) at the max-F1 confidence
    recall: np.ndarray  # (C,)
    ap: np.ndarray  # (C, T) AP per class per IoU threshold


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray) -> ApResult:
    """All predictions of a dataset -> AP per class and threshold, P and R at the best mean F1."""
    order = np.argsort(-conf)  # default (unstable) sort like ultralytics: ties then order the same way
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, counts = np.unique(target_cls, return_counts=True)
    ap = np.zeros((len(classes), tp.shape[1]))
    p_curve, r_curve = np.zeros((len(classes), len(_CURVE_X))), np.zeros((len(classes), len(_CURVE_X)))
    for ci, c in enumerate(classes):
        mask = pred_cls == c
        if not mask.any():
            continue
        tpc = tp[mask].cumsum(0)
        fpc = (1 - tp[mask]).cumsum(0)
        recall = tpc / (counts[ci] + _EPS)
        precision = tpc / (tpc + fpc)
        # Curves over confidence; conf decreases, so negate both to give np.interp increasing x.
        r_curve[ci] = np.interp(-_CURVE_X, -conf[mask], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-_CURVE_X, -conf[mask], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    f1 = 2 * p_curve * r_curve / (p_curve + r_curve + _EPS)
    best = int(_smooth(f1.mean(0), 0.1).argmax()) if len(classes) else 0
    return ApResult(classes.astype(int), counts, p_curve[:, best], r_curve[:, best], ap)


# --- results --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundTruth:
    """One image's labelled boxes in pixels."""

    boxes: np.ndarray  # (M, 4) float32 x1, y1, x2, y2
    classes: np.ndarray  # (M,) int32

    @classmethod
    def empty(cls) -> GroundTruth:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class ClassMetrics:
    class_id: int
    name: str
    images: int  # images with at least one box of this class
    instances: int
    precision: float
    recall: float
    map50: float
    map50_95: float

    def as_dict(self) -> dict:
        return {"class_id": self.class_id, "name": self.name, "images": self.images, "instances": self.instances,
                "precision": self.precision, "recall": self.recall, "mAP50": self.map50, "mAP50-95": self.map50_95}


@dataclass(frozen=True)
class DetectionMetrics:
    images: int
    instances: int
    precision: float  # class means, as ultralytics' Box(P R mAP50 mAP50-95) "all" row
    recall: float
    map50: float
    map75: float
    map50_95: float
    per_class: tuple[ClassMetrics, ...]  # only classes with ground truth

    def as_dict(self) -> dict:
        return {"images": self.images, "instances": self.instances, "precision": self.precision,
                "recall": self.recall, "mAP50": self.map50, "mAP75": self.map75, "mAP50-95": self.map50_95,
                "per_class": [c.as_dict() for c in self.per_class]}


class MetricsAccumulator:
    """Feed one image at a time (predictions + ground truth), then `compute()`."""

    def __init__(self, names: tuple[str, ...] | list[str] = ()) -> None:
        self.names = tuple(names)
        self._tp: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []
        self._pred_cls: list[np.ndarray] = []
        self._target_cls: list[np.ndarray] = []
        self._target_img: list[np.ndarray] = []
        self.images = 0

    def add(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, truth: GroundTruth) -> None:
        """One image: predicted xyxy boxes, scores and class ids, in the same pixels as `truth`."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores, classes = np.asarray(scores, np.float64).reshape(-1), np.asarray(classes).reshape(-1)
        # Matching assumes descending confidence; the models' outputs already are, so this rarely moves anything.
        order = np.argsort(-scores, kind="stable")
        boxes, scores, classes = boxes[order], scores[order], classes[order]
        if len(truth) and len(scores):
            tp = match_predictions(classes, truth.classes, box_iou(truth.boxes, boxes))
        else:
            tp = np.zeros((len(scores), len(IOU_THRESHOLDS)), dtype=bool)
        self._tp.append(tp)
        self._conf.append(scores)
        self._pred_cls.append(classes.astype(np.float64))
        self._target_cls.append(truth.classes.astype(np.float64))
        self._target_img.append(np.unique(truth.classes))
        self.images += 1

    def add_detections(self, detections: Detections, truth: GroundTruth) -> None:
        self.add(detections.xyxy, detections.confidence, detections.class_id, truth)

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Everything fed so far: tp (N, T) float, conf (N,), pred_cls (N,), target_cls (M,)."""
        def cat(parts: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
            return np.concatenate(parts, 0) if parts else np.zeros(shape)

        return (cat(self._tp, (0, len(IOU_THRESHOLDS))).astype(np.float64), cat(self._conf, (0,)),
                cat(self._pred_cls, (0,)), cat(self._target_cls, (0,)))

    def compute(self) -> DetectionMetrics:
        result = ap_per_class(*self.stats())
        target_img = np.concatenate(self._target_img) if self._target_img else np.zeros(0)
        image_counts = np.bincount(target_img.astype(int))
        per_class = tuple(
            ClassMetrics(
                class_id=int(c), name=self.names[c] if 0 <= c < len(self.names) else str(int(c)),
                images=int(image_counts[c]) if c < len(image_counts) else 0, instances=int(n),
                precision=float(result.precision[i]), recall=float(result.recall[i]),
                map50=float(result.ap[i, 0]), map50_95=float(result.ap[i].mean()),
            )
            for i, (c, n) in enumerate(zip(result.classes, result.instances))
        )
        mean = lambda values: float(np.mean(values)) if len(values) else 0.0  # noqa: E731
        return DetectionMetrics(
            images=self.images, instances=int(result.instances.sum()),
            precision=mean(result.precision), recall=mean(result.recall),
            map50=mean(result.ap[:, 0]), map75=mean(result.ap[:, 5]), map50_95=mean(result.ap),
            per_class=per_class,
        )
