"""Helpers for comparing the worker with reference code (ultralytics); used by tests and benchmarks only."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def checkpoint_imgsz(pt: str | Path) -> int:
    """The imgsz an ultralytics .pt was trained at (640 when the checkpoint does not say)."""
    import torch

    ckpt = torch.load(str(pt), map_location="cpu", weights_only=False)
    imgsz = (ckpt.get("train_args") or {}).get("imgsz", 640)
    return int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
