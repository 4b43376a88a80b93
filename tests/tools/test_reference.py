"""worker.tools.reference.parity_counts: the box-by-box match the parity tests and
benchmarks/reduced_decode.py count, on hand-made detections."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import ROOT
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


@pytest.mark.slow
@pytest.mark.reference
def test_reduced_decode_benchmark_reports_parity_and_map_for_both_decodes(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reduced_decode

    out = tmp_path / "report.json"
    assert reduced_decode.main(["--n", "4", "--seed", "11", "--keep", str(tmp_path / "scenes"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["scenes"] == 4 and report["host"].startswith("host: ")
    assert len(list((tmp_path / "scenes" / "images" / "val").glob("*.jpg"))) == 4
    full, reduced = report["decode"]["full"], report["decode"]["reduced"]
    assert full["parity"]["within_tolerance"] >= 0.99  # the full decode is the parity tests' path
    for row in (full, reduced):
        assert 0 <= row["parity"]["matched"] <= row["parity"]["detections"] and 0 <= row["mAP50"] <= 1
