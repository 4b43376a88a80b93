"""worker.evaluation.metrics: hand-computed cases, agreement with faster-coco-eval, and (reference) with ultralytics.

About 0.995: ultralytics' compute_ap samples np.interp(x, mrec, mpre) at 101 points and integrates with
the trapezoid rule. np.interp at recall 1.0 returns the last sentinel (precision 0), so the final
trapezoid is (1 + 0) / 2 * 0.01 and a perfect class scores 0.995, not 1.0 (the familiar YOLO ceiling).
"""

from __future__ import annotations

import numpy as np
import pytest

from worker.inference.detections import Detections
from worker.evaluation.metrics import (
    IOU_THRESHOLDS,
    GroundTruth,
    MetricsAccumulator,
    box_iou,
    compute_ap,
    match_predictions,
)

PERFECT_AP = 0.995


def truth(*rows) -> GroundTruth:
    """rows of (class, x1, y1, x2, y2)."""
    a = np.array(rows, np.float32).reshape(-1, 5)
    return GroundTruth(a[:, 1:], a[:, 0].astype(np.int32))


def preds(*rows):
    """rows of (class, score, x1, y1, x2, y2) -> boxes, scores, classes."""
    a = np.array(rows, np.float64).reshape(-1, 6)
    return a[:, 2:].astype(np.float32), a[:, 1], a[:, 0].astype(np.int32)


def metrics_of(images, names=("deer",)):
    acc = MetricsAccumulator(names)
    for p, t in images:
        acc.add(*p, t)
    return acc.compute()


# --- exact, hand-computed ---------------------------------------------------------------------------
def test_perfect_predictions_score_the_ultralytics_ceiling():
    gt = truth((0, 10, 10, 50, 50), (0, 100, 100, 180, 160))
    m = metrics_of([(preds((0, 0.9, 10, 10, 50, 50), (0, 0.8, 100, 100, 180, 160)), gt)])
    assert m.precision == pytest.approx(1.0) and m.recall == pytest.approx(1.0)
    assert m.map50 == pytest.approx(PERFECT_AP, abs=1e-12)
    assert m.map50_95 == pytest.approx(PERFECT_AP, abs=1e-12)
    assert (m.images, m.instances) == (1, 2)


def test_no_predictions_score_zero():
    gt = truth((0, 10, 10, 50, 50))
    m = metrics_of([(preds(), gt), (preds(), truth())])
    assert (m.precision, m.recall, m.map50, m.map50_95) == (0.0, 0.0, 0.0, 0.0)
    assert m.images == 2 and m.instances == 1


def test_one_of_two_found():
    # recall [0.5], precision [1]: envelope 1 up to recall 0.49, 0 from 0.5 on ->
    # trapezoid 0.49 (49 full steps) + 0.005 (the 0.49 -> 0.50 step) = 0.495.
    gt = truth((0, 10, 10, 50, 50), (0, 100, 100, 180, 160))
    m = metrics_of([(preds((0, 0.9, 10, 10, 50, 50)), gt)])
    assert m.recall == pytest.approx(0.5, abs=1e-9)
    assert m.precision == pytest.approx(1.0)
    assert m.map50 == pytest.approx(0.495, abs=1e-12)


def test_false_positive_ranked_first():
    # precision [0, 0.5] at recall [0, 1]: envelope 0.5 on [0, 1), 0 at 1 -> 0.01 * (99 * 0.5 + 0.25) = 0.4975.
    # (COCO's step rule gives 0.5 here: one of the differences the tolerance below accounts for.)
    gt = truth((0, 10, 10, 50, 50))
    m = metrics_of([(preds((0, 0.9, 200, 200, 240, 240), (0, 0.8, 10, 10, 50, 50)), gt)])
    assert m.map50 == pytest.approx(0.4975, abs=1e-12)
    assert m.recall == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive():
    gt = truth((0, 10, 10, 50, 50))
    boxes, scores, classes = preds((0, 0.9, 10, 10, 50, 50), (0, 0.8, 10, 10, 50, 50))
    tp = match_predictions(classes, gt.classes, box_iou(gt.boxes, boxes))
    assert tp[0].all() and not tp[1].any()
    m = metrics_of([((boxes, scores, classes), gt)])
    assert m.map50 == pytest.approx(PERFECT_AP, abs=1e-12)  # the duplicate ranks after the only TP


def test_iou_exactly_075_counts_up_to_the_075_threshold():
    gt = truth((0, 0, 0, 100, 100))
    boxes, scores, classes = preds((0, 0.9, 0, 0, 75, 100))  # 7500 / 10000 = 0.75 exactly in float32
    assert box_iou(gt.boxes, boxes)[0, 0] == np.float32(0.75)
    assert match_predictions(classes, gt.classes, box_iou(gt.boxes, boxes))[0].tolist() == [True] * 6 + [False] * 4
    m = metrics_of([((boxes, scores, classes), gt)])
    assert m.map50 == pytest.approx(PERFECT_AP, abs=1e-12)
    assert m.map50_95 == pytest.approx(0.6 * PERFECT_AP, abs=1e-12)


def test_wrong_class_is_not_a_match_and_unlabelled_classes_are_not_averaged():
    gt = truth((0, 10, 10, 50, 50), (1, 100, 100, 150, 150))
    m = metrics_of([(preds((1, 0.9, 10, 10, 50, 50), (1, 0.8, 100, 100, 150, 150)), gt)], names=("deer", "fox", "cat"))
    by_class = {c.name: c for c in m.per_class}
    assert set(by_class) == {"deer", "fox"}  # "cat" has no ground truth: not in the means
    assert by_class["deer"].map50 == 0.0 and by_class["deer"].recall == 0.0
    # The fox prediction on the deer ranks first: a false positive, then the true one -> 0.4975 (see above).
    assert by_class["fox"].map50 == pytest.approx(0.4975, abs=1e-12)
    assert m.map50 == pytest.approx(0.4975 / 2, abs=1e-12)
    assert by_class["fox"].images == 1 and by_class["fox"].instances == 1


def test_matching_prefers_the_higher_confidence_prediction_and_best_iou():
    gt = truth((0, 0, 0, 100, 100), (0, 50, 0, 150, 100))
    # One prediction sits between both truths but nearer the first; the second matches the first exactly.
    boxes, scores, classes = preds((0, 0.9, 10, 0, 110, 100), (0, 0.8, 0, 0, 100, 100))
    tp = match_predictions(classes, gt.classes, box_iou(gt.boxes, boxes))
    # At 0.5 the first prediction (IoU 0.82 with truth 0) claims truth 0; the second then finds truth 1 at
    # IoU 0.33 only, so it is a false positive there.
    assert tp[:, 0].tolist() == [True, False]


def test_unsorted_input_is_sorted_by_confidence():
    gt = truth((0, 10, 10, 50, 50))
    a = metrics_of([(preds((0, 0.3, 10, 10, 50, 50), (0, 0.9, 12, 10, 50, 50)), gt)])
    b = metrics_of([(preds((0, 0.9, 12, 10, 50, 50), (0, 0.3, 10, 10, 50, 50)), gt)])
    assert a == b


def test_add_detections_and_as_dict():
    acc = MetricsAccumulator(("deer",))
    det = Detections(np.array([[10, 10, 50, 50]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32))
    acc.add_detections(det, truth((0, 10, 10, 50, 50)))
    d = acc.compute().as_dict()
    assert d["mAP50"] == pytest.approx(PERFECT_AP) and d["per_class"][0]["name"] == "deer"


def test_compute_ap_of_a_single_true_positive():
    assert compute_ap(np.array([1.0]), np.array([1.0])) == pytest.approx(PERFECT_AP, abs=1e-12)


# --- faster-coco-eval -------------------------------------------------------------------------------
def random_scenes(seed: int, n_images: int = 40, num_classes: int = 2):
    """Scenes with misses, false positives, duplicates, class confusions and empty images."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n_images):
        m = int(rng.integers(0, 7))
        xy = rng.uniform(0, 800, (m, 2))
        gt_boxes = np.concatenate([xy, xy + rng.uniform(20, 150, (m, 2))], 1).astype(np.float32)
        gt_classes = rng.integers(0, num_classes, m).astype(np.int32)
        found = rng.random(m) < 0.75  # misses
        src = np.flatnonzero(found)
        src = np.concatenate([src, rng.choice(src, int(rng.integers(0, 2)))]) if len(src) else src  # duplicates
        boxes = gt_boxes[src] + rng.normal(0, 9, (len(src), 4)).astype(np.float32)
        classes = np.where(rng.random(len(src)) < 0.9, gt_classes[src], rng.integers(0, num_classes, len(src)))
        n_fp = int(rng.integers(0, 4))  # false positives anywhere
        fxy = rng.uniform(0, 800, (n_fp, 2))
        boxes = np.concatenate([boxes, np.concatenate([fxy, fxy + rng.uniform(20, 150, (n_fp, 2))], 1)])
        classes = np.concatenate([classes, rng.integers(0, num_classes, n_fp)]).astype(np.int32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        scores = rng.random(len(classes))  # continuous: no ties, so every sort order agrees
        scenes.append((boxes.astype(np.float32), scores, classes, GroundTruth(gt_boxes, gt_classes)))
    return scenes


def coco_eval(scenes, num_classes):
    from faster_coco_eval import COCO, COCOeval_faster

    gt = {"images": [], "annotations": [], "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
    dets = []
    for i, (boxes, scores, classes, t) in enumerate(scenes):
        gt["images"].append({"id": i + 1, "width": 1000, "height": 1000})
        for b, c in zip(t.boxes.astype(float), t.classes):
            w, h = b[2] - b[0], b[3] - b[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                                      "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, c in zip(boxes.astype(float), scores, classes):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": float(s)})
    coco_gt = COCO(gt)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), "bbox")
    ev.params.maxDets = [1, 10, 1000]  # never truncate: ultralytics has no per-image cap here
    ev.evaluate()
    ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, 101 recall points, classes), area "all"


def coco_step_ap(tp, conf, n_gt):
    """COCO's accumulate() for one class and threshold: envelope, then precision at the first rank whose
    recall reaches each of the 101 recall points (0 beyond the last), averaged."""
    order = np.argsort(-conf, kind="mergesort")
    tps = np.cumsum(tp[order])
    fps = np.cumsum(1 - tp[order])
    recall = tps / n_gt
    precision = np.maximum.accumulate((tps / np.maximum(tps + fps, np.spacing(1)))[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matching_agrees_exactly_with_coco(seed):
    """Our per-prediction TP matrix, integrated with COCO's own step rule, reproduces faster-coco-eval's AP
    for every class and every IoU threshold: the matching (greedy, best unclaimed truth) is the same."""
    scenes = random_scenes(seed)
    acc = MetricsAccumulator(("a", "b"))
    for boxes, scores, classes, t in scenes:
        acc.add(boxes, scores, classes, t)
    tp, conf, pred_cls, target_cls = acc.stats()
    coco = coco_eval(scenes, 2)
    for c in (0, 1):
        mask = pred_cls == c
        for j in range(len(IOU_THRESHOLDS)):
            ours = coco_step_ap(tp[mask, j], conf[mask], (target_cls == c).sum())
            assert ours == pytest.approx(coco[j, :, c].mean(), abs=1e-9), (c, j)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_map_agrees_with_coco_within_the_interpolation_bound(seed):
    """Same data, the two integration rules. Per class and threshold, with the envelope p(r) and n truths:
    - ultralytics interpolates linearly between envelope points, COCO takes the next point's value; the
      gap at a grid point is at most the precision drop across that recall step, and a step spans at most
      1/n recall (one TP adds 1/n), i.e. at most 100/n + 1 grid points: summed, <= (100/n + 1) * 1 drop;
    - trapezoid (x 0.01, half-weight ends) vs mean over 101 points: within [-0.01, +0.01].
    So 0.01 * sum(gap) + 0.01 bounds it: |ultralytics - COCO| <= 1/n + 0.02. With ~50 truths per class
    that is ~0.04, far looser than what is seen (~0.002), but it is a bound, not a fitted number; the
    exact agreement of the matching is the previous test."""
    scenes = random_scenes(seed)
    acc = MetricsAccumulator(("a", "b"))
    for boxes, scores, classes, t in scenes:
        acc.add(boxes, scores, classes, t)
    ours = acc.compute()
    coco = coco_eval(scenes, 2)
    for cm in ours.per_class:
        bound = 1 / cm.instances + 0.02
        assert cm.map50 == pytest.approx(coco[0, :, cm.class_id].mean(), abs=bound)
        assert cm.map50_95 == pytest.approx(coco[:, :, cm.class_id].mean(), abs=bound)
    assert ours.map50 == pytest.approx(coco[0].mean(), abs=0.005)  # observed gaps are ~0.002 on these seeds
    assert ours.map50_95 == pytest.approx(coco.mean(), abs=0.005)


# --- ultralytics (reference) ------------------------------------------------------------------------
@pytest.mark.reference
def test_identical_to_ultralytics_detmetrics():
    """Bit-for-bit (1e-12) equal to ultralytics' DetMetrics fed by its own match_predictions and box_iou,
    including tied scores (rounded to 2 decimals), empty images and classes without predictions."""
    import torch
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics
    from ultralytics.utils.metrics import box_iou as ul_box_iou

    validator = DetectionValidator.__new__(DetectionValidator)  # only match_predictions and iouv are used
    validator.iouv = torch.linspace(0.5, 0.95, 10)
    for seed in range(25):
        scenes = random_scenes(100 + seed, n_images=6, num_classes=3)
        ours = MetricsAccumulator(("a", "b", "c"))
        theirs = DetMetrics(names={0: "a", 1: "b", 2: "c"})
        for boxes, scores, classes, t in scenes:
            scores = np.round(scores, 2).astype(np.float32)  # ties on purpose
            order = np.argsort(-scores, kind="stable")
            boxes, scores, classes = boxes[order], scores[order], classes[order]
            ours.add(boxes, scores, classes, t)
            if len(t) and len(scores):
                iou = ul_box_iou(torch.from_numpy(t.boxes), torch.from_numpy(boxes))
                tp = validator.match_predictions(torch.from_numpy(classes), torch.from_numpy(t.classes), iou).numpy()
            else:
                tp = np.zeros((len(scores), 10), bool)
            theirs.update_stats({"tp": tp, "conf": scores, "pred_cls": classes.astype(float),
                                 "target_cls": t.classes.astype(float), "target_img": np.unique(t.classes),
                                 "im_name": "x"})
        theirs.process()
        m = ours.compute()
        assert [m.precision, m.recall, m.map50, m.map50_95] == pytest.approx(theirs.box.mean_results(), abs=1e-12)
        assert [c.map50_95 for c in m.per_class] == pytest.approx(list(theirs.box.maps[theirs.box.ap_class_index]),
                                                                  abs=1e-12)
