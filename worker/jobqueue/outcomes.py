"""The one place an outcome becomes its result message, its metric labels and its RQ registry.

  outcome   result status   jobs_total{outcome, error_kind}     RQ registry
  ok        ok              ok, none                            finished (the message is the job's result)
  expired   expired         expired, <reason>                   finished
  failed    failed          failed, <error kind>                failed
  refused   failed          refused, <error kind>               failed   (a JobRefusedError: not a deer job)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker import zones
from worker.cameras import CameraSettings
from worker.errors import JobRefusedError
from worker.inference.detector import DetectionResult
from worker.jobqueue.results import ModelInfo, build_message, deer_detected


@dataclass(frozen=True)
class JobContext:
    """What every result message of a job says, whatever its outcome."""

    job_id: str
    camera_id: str  # "" when the payload could not be read
    captured_at: float | None
    worker: str
    model: ModelInfo
    queue_wait: float  # s from enqueueing to the worker taking the job


@dataclass(frozen=True)
class Outcome:
    label: str  # ok | expired | failed | refused: the jobs_total outcome label
    kind: str  # the jobs_total error_kind label
    message: dict[str, Any]
    error: BaseException | None = None  # set: RQ's failed registry with it; None: finished with the message
    camera_label: str = ""
    zone_hits: tuple[str, ...] = ()  # one zone name per (detection, include zone) pair: the zone counter
    detected: tuple[str, ...] = ()  # the class name of each detection the result reports: the detections counter

    def count(self, metrics) -> None:
        metrics.count_job(self.label, self.kind)
        if self.detected:
            metrics.count_detections(self.camera_label, list(self.detected))
        if self.zone_hits:
            metrics.count_zones(self.camera_label, list(self.zone_hits))


def _message(context: JobContext, status: str, **fields) -> dict[str, Any]:
    timings = {"queue_wait": context.queue_wait, **fields.pop("timings", {})}
    return build_message(status=status, job_id=context.job_id, camera_id=context.camera_id,
                         captured_at=context.captured_at, worker=context.worker, model=context.model,
                         timings=timings, **fields)


def ok(context: JobContext, result: DetectionResult, settings: CameraSettings | None = None) -> Outcome:
    """Zones (additive result fields): ignore zones drop detections, each detection and the result name
    their include zones, and a camera with require_zone reports deer_detected only for a deer in one."""
    settings = settings or CameraSettings()
    placement = zones.place(result.detections, settings.zones, settings.zone_rule,
                            result.image_width, result.image_height)
    message = _message(context, "ok", batch_size=result.batch_size, detections=placement.detections,
                       image_size=(result.image_width, result.image_height), timings=result.timings.as_dict())
    for detection, names in zip(message["detections"], placement.zones_of):
        detection["zones"] = names
    message["zones"] = placement.zones
    if settings.require_zone:
        message["deer_detected"] = deer_detected(placement.detections.filter(
            np.array([bool(names) for names in placement.zones_of], bool)), context.model.alert_classes)
    hits = tuple(name for names in placement.zones_of for name in names)
    detected = tuple(detection["class_name"] for detection in message["detections"])  # after ignore zones
    return Outcome("ok", "none", message, camera_label=settings.label, zone_hits=hits, detected=detected)


def expired(context: JobContext, reason: str, age: float, max_age: float) -> Outcome:
    message = _message(context, "expired", error_kind=reason,
                       error=f"snapshot not inferred: {reason} (age {age:.1f} s, max_age {max_age} s)")
    return Outcome("expired", reason, message)


def failed(context: JobContext, error: BaseException) -> Outcome:
    """Failed, or refused when the error says the job is not a deer job at all (by its class)."""
    kind = getattr(error, "kind", type(error).__name__)
    message = _message(context, "failed", error_kind=kind, error=str(error))
    return Outcome("refused" if isinstance(error, JobRefusedError) else "failed", kind, message, error)
