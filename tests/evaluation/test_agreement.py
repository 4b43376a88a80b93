"""worker.evaluation.agreement: two models' answers for the same snapshot, without labels (compare, the
shadow runner and tune use it)."""

from __future__ import annotations

import numpy as np
import pytest

from worker.evaluation.agreement import agreement, box_f1, summarize
from worker.inference.detections import Detections

NAMES = ("deer", "person")
DEER = ("deer",)


def dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    if not rows:
        return Detections.empty(NAMES)
    array = np.array(rows, np.float32)
    return Detections(array[:, :4], array[:, 4], array[:, 5].astype(np.int32), NAMES)


def test_matching_pairs_same_class_boxes_at_iou_half():
    a = dets((0, 0, 100, 100, 0.9, 0), (200, 200, 300, 300, 0.8, 1), (500, 500, 520, 520, 0.7, 0))
    b = dets((10, 0, 100, 100, 0.6, 0), (200, 200, 300, 300, 0.8, 0))  # second box: same place, other class
    result = agreement(a, b, alert_a=DEER, alert_b=DEER)
    assert result.deer == "both"
    assert (result.matched, result.a_unmatched, result.b_unmatched) == (1, 2, 1)
    assert result.ious == [0.9] and result.confidence_deltas == [pytest.approx(-0.3, abs=1e-4)]
    assert not result.agrees


def test_deer_decision_table_and_summary():
    deer, person, none = dets((0, 0, 10, 10, 0.9, 0)), dets((0, 0, 10, 10, 0.9, 1)), dets()
    outcomes = [agreement(a, b, alert_a=DEER, alert_b=DEER)
                for a, b in ((deer, deer), (deer, person), (none, deer), (person, person))]
    assert [o.deer for o in outcomes] == ["both", "a_only", "b_only", "neither"]
    summary = summarize(outcomes)
    assert summary["deer_detected"] == {"both": 1, "a_only": 1, "b_only": 1, "neither": 1}
    assert summary["deer_agreement"] == 0.5 and summary["images_agreeing"] == 2
    assert summary["boxes"] == {"matched": 2, "a_only": 1, "b_only": 2, "mean_iou": 1.0}
    # a differing deer decision outranks box differences in the gallery's order
    assert outcomes[1].severity > outcomes[2].severity - 10 > 0 and outcomes[0].severity == 0


def test_box_f1_counts_matched_boxes_of_the_reference():
    def dets(*boxes):
        return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.full(len(boxes), 0.9, np.float32),
                          np.zeros(len(boxes), np.int32), ("deer",))

    same = [dets([0, 0, 10, 10]), dets()]
    assert box_f1(same, same) == 1.0
    assert box_f1([dets(), dets()], [dets(), dets()]) == 1.0
    # one of two reference boxes found, nothing extra: F1 = 2*1 / (2*1 + 1)
    assert box_f1([dets([0, 0, 10, 10], [50, 50, 60, 60])], [dets([1, 1, 10, 10])]) == pytest.approx(2 / 3)
    assert box_f1([dets([0, 0, 10, 10])], [dets([30, 30, 40, 40])]) == 0.0


def test_each_model_decides_deer_by_its_own_alert_classes():
    """A one-class model whose class is "blob" against the deer model, both finding the same animal."""
    blob = Detections(np.array([[0, 0, 10, 10]], np.float32), np.array([0.8], np.float32), np.zeros(1, np.int32), ("blob",))
    deer = dets((0, 0, 10, 10, 0.9, 0))
    assert agreement(blob, deer, alert_a=("blob",), alert_b=DEER).deer == "both"
    assert agreement(blob, deer, alert_a=(), alert_b=DEER).deer == "b_only"  # a model that alerts on nothing
    assert agreement(deer, dets((0, 0, 10, 10, 0.9, 1)), alert_a=DEER, alert_b=("deer", "person")).deer == "both"
