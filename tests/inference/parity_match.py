"""Parity assertion for the parity tests (test_parity against ultralytics on the IR, test_parity_pt
against PyTorch predict): worker.tools.reference.parity_counts matches the two detectors' outputs box by
box (same class, IoU >= 0.99 or every corner within the JSON's 0.1 px rounding, confidences within 0.01;
only detections clear of the threshold by 0.01 count); >= 99% must match, both ways."""

from __future__ import annotations

from worker.tools.reference import parity_counts


def assert_parity(ours, theirs, conf: float, min_detections: int = 4) -> tuple[int, int]:
    matched, total = parity_counts(ours, theirs, conf)
    assert total >= min_detections, f"too few detections ({total}) for parity to mean anything"
    assert matched / total >= 0.99, f"{matched}/{total} detections match"
    return matched, total
