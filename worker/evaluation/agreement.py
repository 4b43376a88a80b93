"""How two models' answers for the same snapshots agree, without labels: the deer decision (both / A only /
B only / neither), boxes paired at IoU >= 0.5 (same class), IoU and confidence deltas of the pairs.
compare reports it, the shadow runner counts it, tune scores a candidate by it (box_f1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from worker.evaluation.metrics import box_iou
from worker.evaluation.timing import percentiles
from worker.inference.detections import Detections

MATCH_IOU = 0.5  # boxes of the two models are the same object at this IoU or more (the mAP50 criterion)
DEER_OUTCOMES = ("both", "a_only", "b_only", "neither")


@dataclass
class Agreement:
    """How two answers for one snapshot agree."""

    deer: str  # one of DEER_OUTCOMES
    matched: int  # boxes paired at IoU >= MATCH_IOU, same class
    a_unmatched: int  # boxes only A found
    b_unmatched: int
    ious: list[float] = field(default_factory=list)  # of the matched pairs
    confidence_deltas: list[float] = field(default_factory=list)  # B - A, of the matched pairs

    @property
    def agrees(self) -> bool:
        return self.deer in ("both", "neither") and not self.a_unmatched and not self.b_unmatched

    @property
    def severity(self) -> float:
        """How badly the answers disagree, for sorting a gallery: a deer decision that differs outweighs
        any number of box differences; then unmatched boxes; then how loosely matched boxes overlap."""
        return (10.0 * (self.deer in ("a_only", "b_only")) + self.a_unmatched + self.b_unmatched
                + sum(1.0 - iou for iou in self.ious) + sum(abs(d) for d in self.confidence_deltas))


def agreement(a: Detections, b: Detections, *, alert_a: tuple[str, ...], alert_b: tuple[str, ...],
              match_iou: float = MATCH_IOU) -> Agreement:
    """Greedy pairing, highest IoU first, of same-class boxes at IoU >= match_iou; the deer decision is each
    model's own (`alert_a`, `alert_b`: its alert classes, as its result message decides it)."""
    deer_a, deer_b = a.any_of(alert_a), b.any_of(alert_b)
    deer = "both" if deer_a and deer_b else "a_only" if deer_a else "b_only" if deer_b else "neither"
    iou = box_iou(a.xyxy, b.xyxy)
    if iou.size:
        iou = np.where(a.class_id[:, None] == b.class_id[None, :], iou, 0.0)
    pairs: list[tuple[int, int, float]] = []
    used_a, used_b = set(), set()
    for flat in np.argsort(-iou, axis=None) if iou.size else []:
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < match_iou:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, float(iou[i, j])))
    return Agreement(deer, len(pairs), len(a) - len(pairs), len(b) - len(pairs),
                     [round(p[2], 4) for p in pairs],
                     [round(float(b.confidence[j] - a.confidence[i]), 4) for i, j, _ in pairs])


def summarize(agreements: list[Agreement]) -> dict:
    """Totals over images: the deer decision table, box matching, IoU and confidence delta distribution."""
    deer = {outcome: sum(a.deer == outcome for a in agreements) for outcome in DEER_OUTCOMES}
    ious = [iou for a in agreements for iou in a.ious]
    deltas = [d for a in agreements for d in a.confidence_deltas]
    images = len(agreements)
    return {
        "images": images,
        "deer_detected": deer,
        "deer_agreement": round((deer["both"] + deer["neither"]) / images, 4) if images else None,
        "images_agreeing": sum(a.agrees for a in agreements),
        "boxes": {"matched": sum(a.matched for a in agreements),
                  "a_only": sum(a.a_unmatched for a in agreements),
                  "b_only": sum(a.b_unmatched for a in agreements),
                  "mean_iou": round(float(np.mean(ious)), 4) if ious else None},
        "confidence_delta": {"mean": round(float(np.mean(deltas)), 4) if deltas else None,
                             "max_abs": round(float(np.max(np.abs(deltas))), 4) if deltas else None,
                             **percentiles(deltas)},
    }


def box_f1(reference: list[Detections], other: list[Detections]) -> float:
    """F1 of `other`'s boxes against `reference`'s over all snapshots, paired as `agreement` pairs them
    (same class, IoU >= 0.5); 1.0 when both find nothing anywhere."""
    matched = unmatched = 0
    for ref, det in zip(reference, other):
        pairs = agreement(ref, det, alert_a=(), alert_b=())  # boxes only: no deer decision
        matched, unmatched = matched + pairs.matched, unmatched + pairs.a_unmatched + pairs.b_unmatched
    return 1.0 if matched + unmatched == 0 else 2 * matched / (2 * matched + unmatched)
