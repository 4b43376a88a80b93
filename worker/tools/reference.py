"""Helpers for comparing the worker with reference code (ultralytics): tests, benchmarks, and the tools that
score or compare a trained .pt (validate's gate, `compare` of a checkpoint). Never on the worker's path."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import openvino as ov


@contextmanager
def others_compile_pinned(precision: str = "f32") -> Iterator[None]:
    """While inside, every ov.Core.compile_model call of this process runs with INFERENCE_PRECISION_HINT
    set to `precision`. For comparisons with code that compiles its own models (ultralytics), which
    would let this CPU pick bf16, a precision the target machine lacks. Never on the worker's path."""
    original = ov.Core.compile_model

    def compile_pinned(self, model, device_name=None, config=None, **kw):
        return original(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": precision}, **kw)

    ov.Core.compile_model = compile_pinned
    try:
        yield
    finally:
        ov.Core.compile_model = original


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While inside, whatever writes to file descriptor 1 (ultralytics' logger and progress bars) goes to
    stderr, so a --json stdout carries the JSON alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def ultralytics_val(model: str | Path, data: str | Path, imgsz: int, *, precision: str = "f32", split: str = "val",
                    conf: float = 0.001, iou: float = 0.7) -> dict:
    """ultralytics `val` at its defaults (rect batch shapes for a .pt and a dynamic IR, square for a static
    IR; conf 0.001, IoU 0.7; a .pt runs its default head, one-to-many + NMS), every OpenVINO compile pinned to
    `precision`. -> {"mAP50", "mAP50-95", "precision", "recall"} as fractions."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    model = Path(model)
    yolo = YOLO(str(model)) if model.suffix == ".pt" else YOLO(str(model), task="detect")
    with tempfile.TemporaryDirectory() as runs, others_compile_pinned(precision), stdout_to_stderr():
        metrics = yolo.val(data=str(data), imgsz=imgsz, batch=1, split=split, conf=conf, iou=iou, device="cpu",
                           plots=False, verbose=False, project=runs, name="val")
    box = metrics.box
    return {"mAP50": round(float(box.map50), 4), "mAP50-95": round(float(box.map), 4),
            "precision": round(float(box.mp), 4), "recall": round(float(box.mr), 4)}


def checkpoint_facts(pt: str | Path) -> tuple[int, tuple[str, ...]]:
    """(the imgsz an ultralytics .pt was trained at (640 when it does not say), its class names in id
    order), read in seconds: what export checks its inputs against before the minutes of exporting."""
    import torch

    ckpt = torch.load(str(pt), map_location="cpu", weights_only=False)
    imgsz = (ckpt.get("train_args") or {}).get("imgsz", 640)
    model = ckpt.get("ema") or ckpt.get("model")
    raw = getattr(model, "names", None) or {}
    names = tuple(str(raw[k]) for k in sorted(raw)) if isinstance(raw, dict) else tuple(str(n) for n in raw)
    return int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz), names


def checkpoint_imgsz(pt: str | Path) -> int:
    """The imgsz an ultralytics .pt was trained at (640 when the checkpoint does not say)."""
    return checkpoint_facts(pt)[0]


# --- parity: is our output the reference's, box by box? ---------------------------------------------
# A detection matches when the class is the same, IoU >= 0.99 (or every corner within the JSON's 0.1 px
# rounding) and the confidences differ by <= 0.01. Only detections clear of the threshold by 0.01 count,
# so a score sitting on it cannot flip the result. The parity tests require >= 99% matched, both ways.
def _iou(a, b):
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _one_way(src, dst, conf: float) -> tuple[int, int]:
    """(matched, counted) detections of `src` found in `dst`; each side is (xyxy, confidence, class)."""
    (boxes, scores, classes), (dboxes, dscores, dclasses) = src, dst
    matched = total = 0
    for box, score, k in zip(boxes, scores, classes):
        if score <= conf + 0.01:
            continue
        total += 1
        same = dclasses == k
        if same.any():
            ious = _iou(box, dboxes[same])
            best = ious.argmax()
            close = ious[best] >= 0.99 or np.abs(dboxes[same][best] - box).max() <= 0.1
            matched += bool(close and abs(dscores[same][best] - score) <= 0.01)
    return matched, total


def parity_counts(ours, theirs, conf: float) -> tuple[int, int]:
    """(matched, counted) detections over both directions and every image; each image's side is
    (xyxy, confidence, class) arrays."""
    matched = total = 0
    for o, t in zip(ours, theirs):
        for m, n in (_one_way(t, o, conf), _one_way(o, t, conf)):
            matched, total = matched + m, total + n
    return matched, total


def ultralytics_model(model: str | Path):
    """ultralytics YOLO of an IR or a .pt (offline; its load messages to stderr)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    with stdout_to_stderr():
        return YOLO(str(model), task="detect")


def predict_arrays(yolo, image: np.ndarray, imgsz: int, conf: float, iou: float, *,
                   classes: list[int] | None = None, max_det: int = 300) -> tuple:
    """ultralytics predict of one decoded BGR image (rect letterbox; a .pt on the CPU in f32, its default
    one-to-many head + NMS) -> (xyxy, confidence, class) arrays."""
    boxes = yolo.predict(image, imgsz=imgsz, conf=conf, iou=iou, classes=classes, max_det=max_det, device="cpu",
                         verbose=False)[0].boxes
    return boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy().astype(int)


def ultralytics_predict(model: str | Path, images: list, imgsz: int, conf: float, iou: float) -> list[tuple]:
    """ultralytics predict of an IR on decoded BGR images -> per image (xyxy, confidence, class) arrays.
    Pin the precision with others_compile_pinned around the call."""
    yolo = ultralytics_model(model)
    return [predict_arrays(yolo, image, imgsz, conf, iou) for image in images]
