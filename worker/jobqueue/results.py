"""Result messages: one JSON object per job, PUBLISHed, XADDed to a capped stream, kept as the RQ result
(published once per job by rq_compat.PublishOnce)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from worker.constants import PAYLOAD_VERSION
from worker.inference.detections import Detections

@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    weights: str  # fp32 | int8
    precision: str  # inference precision the CPU runs: f32 | bf16
    alert_classes: tuple[str, ...]  # the served model's classes that are `deer_detected` (its card decides)


def deer_detected(detections: Detections, alert_classes: tuple[str, ...]) -> bool:
    """The alarm: one of the served model's alert classes among the detections the result reports. Decided
    here, once per result; the gateway and the MQTT bridge read it from the message."""
    return detections.any_of(alert_classes)


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
        "deer_detected": deer_detected(detections, model.alert_classes) if detections is not None else False,
        "detections": detections.to_json() if detections is not None else [],
        "timings_ms": _ms(timings or {}),
    }
    if status == "ok":  # additive: what deer_detected was decided by (a consumer's confidence of the alarm reads it)
        message["alert_classes"] = list(model.alert_classes)
    if image_size is not None:
        message["image"] = {"width": image_size[0], "height": image_size[1]}
    if error_kind is not None:
        message["error"] = {"kind": error_kind, "message": error or ""}
    return message


def encode(message: dict[str, Any]) -> str:
    """The wire form of a result message, as PUBLISHed, XADDed (field `result`) and kept by RQ."""
    return json.dumps(message, separators=(",", ":"))
