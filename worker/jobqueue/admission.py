"""What runs, what expires, what is rejected: the worker's admission policy as pure functions.

No Redis here: the consumer hands in the dequeued job, the time it took it, and a lookup of a camera's
newest-snapshot marker (read only when latest_only needs it). The verdict is one of
  Run(snapshot, settings)             infer it
  Expire(snapshot, settings, reason)  an outcome, not an error: the snapshot is not worth inferring
  Reject(snapshot, settings, error)   fail it with error's kind (outcomes.py counts JobRefusedError as refused)
Expiry is a verdict rather than an exception because nothing went wrong: it ends the job as finished.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from worker.cameras import CameraBook, CameraSettings, override_settings, preprocessing_clashes
from worker.config import WorkerConfig
from worker.constants import JOB_FUNCTION
from worker.errors import DeerWorkerError, ForbiddenFunctionError, ModelUnavailableError, NotJsonError, PayloadError
from worker.jobqueue.contract import SnapshotJob, parse_payload, snapshot_key_of
from worker.inference.preprocess import Preprocessing

ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})


class QueuedJob(Protocol):
    """What admission reads of a dequeued job (an RQ DeerJob in production). Reading func_name or args
    raises for data that is not a JSON job."""

    id: str
    func_name: str
    args: tuple
    kwargs: dict
    has_hooks: bool
    enqueued_at: datetime | None


@dataclass(frozen=True)
class Verdict:
    snapshot: SnapshotJob | None  # None when the payload could not be read
    settings: CameraSettings | None


@dataclass(frozen=True)
class Run(Verdict):
    pass


@dataclass(frozen=True)
class Expire(Verdict):
    reason: str  # too_old | superseded | camera_disabled
    age: float
    max_age: float = 0.0  # the limit this job was held to (its own v2 max_age, else the worker's)


@dataclass(frozen=True)
class Reject(Verdict):
    error: DeerWorkerError


def payload_of(job: QueuedJob) -> Any:
    """The payload argument of an allow-listed deer job; raises the reason a job is rejected."""
    if job.func_name not in ALLOWED_FUNCTIONS:
        raise ForbiddenFunctionError(f"function {job.func_name!r} is not allow-listed for deer workers")
    if getattr(job, "has_hooks", False):  # a plain RQ Job (another job_class) has no such check
        raise ForbiddenFunctionError("job callbacks and webhooks are not allowed on deer jobs")
    if job.kwargs or len(job.args) != 1:
        raise PayloadError("a snapshot job takes exactly one payload argument")
    return job.args[0]


def not_json(exc: BaseException) -> NotJsonError:
    """The error for a job whose data could not be read as a JSON deer job."""
    return NotJsonError(f"job data is not a valid JSON job ({type(exc).__name__}: {exc})")


def prefetch_key(job: QueuedJob) -> str | None:
    """The key of a deer job's snapshot, to read while registering it; None for anything decide() will
    reject or that carries its snapshot otherwise."""
    try:
        return snapshot_key_of(payload_of(job))
    except Exception:  # noqa: BLE001 - a rejected or unreadable job: decide() says why
        return None


def age_of(snapshot: SnapshotJob, enqueued_at: datetime | None, started: float) -> float:
    """Seconds from capture (or, without a capture time, from enqueueing) to the worker taking the job."""
    reference = snapshot.captured_at
    if reference is None and enqueued_at is not None:
        reference = enqueued_at.timestamp()
    return max(0.0, started - reference) if reference is not None else 0.0


def superseded(latest_marker: str | None, job_id: str, captured_at: float) -> bool:
    """True if the camera's newest-snapshot marker ("captured_at|job_id") names a later, other snapshot."""
    if not latest_marker:
        return False
    latest_at, _, latest_id = latest_marker.partition("|")
    return latest_id != job_id and float(latest_at) > captured_at


def unknown_classes(wanted: tuple[str, ...] | None, known: tuple[str, ...] | None) -> list[str]:
    """Class names a job asks for that the model lacks (none when either list is absent)."""
    return [name for name in wanted if name not in known] if wanted and known is not None else []


def override_clashes(snapshot: SnapshotJob, configured: CameraSettings, model: Preprocessing | None,
                     config: WorkerConfig) -> list[str]:
    """What a v2 job's `camera` override sets against the model's preprocessing (CLAHE on/off, clip, tiles).
    Only the operator forces: worker.yaml force_preprocessing, or the configured camera's own
    force_preprocessing; a force_preprocessing key in the job's override counts for nothing."""
    if snapshot.camera is None or model is None or config.force_preprocessing or configured.force_preprocessing:
        return []
    return preprocessing_clashes(override_settings(CameraSettings(), snapshot.camera, "camera"), model)


def decide(job: QueuedJob, *, config: WorkerConfig, model: str | tuple[str, ...],
           cameras: CameraBook, started: float,
           latest_of: Callable[[str], str | None], class_names: tuple[str, ...] | None = None,
           preprocessing: Preprocessing | None = None) -> Verdict:
    """Check function, payload, model, age and camera; the verdict says what to do with the job.
    A v2 job's own settings (conf, classes, camera override, max_age) replace the camera's and the
    worker's for this job only; class_names (the model's) refuses classes the model does not have, and
    preprocessing (the model's) a camera override that contradicts it (see override_clashes)."""
    try:
        snapshot = parse_payload(payload_of(job), max_snapshot_bytes=config.max_snapshot_bytes)
    except DeerWorkerError as error:
        return Reject(None, None, error)
    except Exception as exc:  # noqa: BLE001 - e.g. a pickled job whose data cannot be deserialized
        return Reject(None, None, not_json(exc))
    configured = cameras.get(snapshot.camera_id)
    settings = snapshot.settings_for(configured)
    served = (model,) if isinstance(model, str) else tuple(model)  # several: the models of a switch in progress
    if snapshot.model and snapshot.model not in served:
        return Reject(snapshot, settings, ModelUnavailableError(
            f"job asks for model {snapshot.model!r}; this worker serves {' or '.join(map(repr, served))}"))
    unknown = unknown_classes(settings.classes, class_names) if snapshot.has_settings else []
    if unknown:
        return Reject(snapshot, settings, PayloadError(
            f"classes: {unknown} are not among the model's classes {list(class_names or ())}"))
    clashes = override_clashes(snapshot, configured, preprocessing, config)
    if clashes:
        return Reject(snapshot, settings, PayloadError(
            f"camera: {', '.join(clashes)} contradicts the preprocessing the model was trained with; drop it "
            f"from the job to follow the model (the worker serves such overrides only with force_preprocessing: true)"))
    age = age_of(snapshot, job.enqueued_at, started)
    max_age = snapshot.max_age if snapshot.max_age is not None else config.max_age
    if age > max_age:
        return Expire(snapshot, settings, "too_old", age, max_age)
    if (config.latest_only and snapshot.captured_at is not None
            and superseded(latest_of(snapshot.camera_id), job.id, snapshot.captured_at)):
        return Expire(snapshot, settings, "superseded", age, max_age)
    if not settings.enabled:
        return Expire(snapshot, settings, "camera_disabled", 0.0, max_age)
    return Run(snapshot, settings)
