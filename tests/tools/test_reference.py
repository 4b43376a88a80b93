"""worker.tools.reference.parity_counts: the box-by-box match the parity tests and
benchmarks/reduced_decode.py count, on hand-made detections."""

from __future__ import annotations

import numpy as np

from worker.tools.reference import parity_counts

CONF = 0.25


def side(*boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x1, y1, x2, y2, confidence, class) rows -> one image's (xyxy, confidence, class) arrays."""
    rows = np.array(boxes, np.float32).reshape(-1, 6)
    return rows[:, :4], rows[:, 4], rows[:, 5].astype(int)


def test_identical_detections_match_both_ways():
    image = side((10, 10, 110, 90, 0.8, 0), (200, 50, 260, 120, 0.6, 0))
    assert parity_counts([image], [image], CONF) == (4, 4)


def test_each_tolerance_is_a_mismatch_past_it():
    ref = side((10, 10, 110, 90, 0.80, 0))
    assert parity_counts([side((10.05, 10, 110, 90.05, 0.805, 0))], [ref], CONF) == (2, 2)  # inside all three
    assert parity_counts([side((10, 10, 110, 90, 0.82, 0))], [ref], CONF) == (0, 2)  # confidence 0.02 apart
    assert parity_counts([side((14, 10, 114, 90, 0.80, 0))], [ref], CONF) == (0, 2)  # IoU 0.92, corners 4 px off
    assert parity_counts([side((10, 10, 110, 90, 0.80, 1))], [ref], CONF) == (0, 2)  # another class


def test_a_missing_box_counts_once_and_scores_at_the_threshold_not_at_all():
    ours = [side((10, 10, 110, 90, 0.8, 0))]
    theirs = [side((10, 10, 110, 90, 0.8, 0), (300, 30, 350, 80, 0.5, 0), (400, 30, 450, 80, CONF + 0.005, 0))]
    assert parity_counts(ours, theirs, CONF) == (2, 3)  # theirs' 0.5 box unmatched; the 0.255 one not counted
    assert parity_counts([side()], [side()], CONF) == (0, 0)
