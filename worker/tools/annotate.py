"""Draw Detections onto an image (for `detect --save-dir` and the demo)."""

from __future__ import annotations

import cv2
import numpy as np

from worker.inference.detections import Detections


def draw(image: np.ndarray, detections: Detections) -> np.ndarray:
    out = image.copy()
    thickness = max(2, round(min(out.shape[:2]) / 360))
    for (x1, y1, x2, y2), score, class_id in zip(detections.xyxy, detections.confidence, detections.class_id):
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(out, p1, p2, (0, 200, 255), thickness)
        label = f"{detections.name_of(int(class_id))} {score:.2f}"
        scale = thickness / 3
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (p1[0], max(0, p1[1] - th - 6)), (p1[0] + tw + 4, p1[1]), (0, 200, 255), -1)
        cv2.putText(out, label, (p1[0] + 2, max(th, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
