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

from worker.errors import JobRefusedError
from worker.inference.detector import DetectionResult
from worker.jobqueue.results import ModelInfo, build_message


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

    def count(self, metrics) -> None:
        metrics.count_job(self.label, self.kind)


def _message(context: JobContext, status: str, **fields) -> dict[str, Any]:
    timings = {"queue_wait": context.queue_wait, **fields.pop("timings", {})}
    return build_message(status=status, job_id=context.job_id, camera_id=context.camera_id,
                         captured_at=context.captured_at, worker=context.worker, model=context.model,
                         timings=timings, **fields)


def ok(context: JobContext, result: DetectionResult) -> Outcome:
    message = _message(context, "ok", batch_size=result.batch_size, detections=result.detections,
                       image_size=(result.image_width, result.image_height), timings=result.timings.as_dict())
    return Outcome("ok", "none", message)


def expired(context: JobContext, reason: str, age: float, max_age: float) -> Outcome:
    message = _message(context, "expired", error_kind=reason,
                       error=f"snapshot not inferred: {reason} (age {age:.1f} s, max_age {max_age} s)")
    return Outcome("expired", reason, message)


def failed(context: JobContext, error: BaseException) -> Outcome:
    """Failed, or refused when the error says the job is not a deer job at all (by its class)."""
    kind = getattr(error, "kind", type(error).__name__)
    message = _message(context, "failed", error_kind=kind, error=str(error))
    return Outcome("refused" if isinstance(error, JobRefusedError) else "failed", kind, message, error)
