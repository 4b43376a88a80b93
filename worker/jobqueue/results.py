"""Result messages: one JSON object per job, PUBLISHed, XADDed to a capped stream, kept as the RQ result
(published once per job by rq_compat.PublishOnce)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from worker.constants import PAYLOAD_VERSION
from worker.inference.detections import Detections

DEER_CLASS = "deer"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    weights: str  # fp32 | int8
    precision: str  # inference precision the CPU runs: f32 | bf16


def deer_detected(detections: Detections) -> bool:
    """True if a deer is among the detections; for models without a deer class, any detection counts."""
    if DEER_CLASS in detections.class_names:
        return bool((detections.class_id == detections.class_names.index(DEER_CLASS)).any())
    return len(detections) > 0


def _ms(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1e3, 3) for k, v in seconds.items()}


def build_message(*, status: str, job_id: str, camera_id: str, captured_at: float | None, worker: str,
                  model: ModelInfo, batch_size: int = 0, detections: Detections | None = None,
                  image_size: tuple[int, int] | None = None, timings: dict[str, float] | None = None,
                  error_kind: str | None = None, error: str | None = None) -> dict[str, Any]:
    """status: ok | expired | failed. Timings in seconds in, milliseconds out."""
    message: dict[str, Any] = {
        "v": PAYLOAD_VERSION, "status": status, "job_id": job_id, "camera_id": camera_id,
        "captured_at": captured_at, "finished_at": round(time.time(), 6),
        "model": {"name": model.name, "version": model.version, "weights": model.weights,
                  "precision": model.precision},
        "worker": worker, "batch_size": batch_size,
        "deer_detected": deer_detected(detections) if detections is not None else False,
        "detections": detections.to_json() if detections is not None else [],
        "timings_ms": _ms(timings or {}),
    }
    if image_size is not None:
        message["image"] = {"width": image_size[0], "height": image_size[1]}
    if error_kind is not None:
        message["error"] = {"kind": error_kind, "message": error or ""}
    return message


def encode(message: dict[str, Any]) -> str:
    """The wire form of a result message, as PUBLISHed, XADDed (field `result`) and kept by RQ."""
    return json.dumps(message, separators=(",", ":"))
