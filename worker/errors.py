"""Typed errors. Each has a stable `kind` that becomes a metric label and the result's error field."""

from __future__ import annotations


class DeerWorkerError(Exception):
    """Base class: something about one input or one setting is wrong; the process goes on."""

    kind = "error"


class ConfigError(DeerWorkerError):
    kind = "config"


class ModelLoadError(DeerWorkerError):
    kind = "model_load"


class InputError(DeerWorkerError):
    """A snapshot that cannot be turned into a tensor."""

    kind = "bad_input"


class EmptyInputError(InputError):
    kind = "empty_input"


class UnsupportedFormatError(InputError):
    kind = "unsupported_format"


class CorruptImageError(InputError):
    kind = "corrupt_image"


class ImageTooLargeError(InputError):
    kind = "image_too_large"


class RoiError(InputError):
    kind = "roi_outside_image"


class PayloadError(DeerWorkerError):
    """A job payload that breaks the contract (schema, version, size, path)."""

    kind = "bad_payload"


class PayloadTooLargeError(PayloadError):
    kind = "payload_too_large"


class SnapshotFileError(PayloadError):
    kind = "snapshot_file"


class SnapshotMissingError(PayloadError):
    """A key snapshot whose Redis key is gone (its TTL ran out before a worker took the job)."""

    kind = "snapshot_missing"


class ModelUnavailableError(PayloadError):
    """The job asks for a model this worker does not serve."""

    kind = "model_unavailable"


class JobRefusedError(DeerWorkerError):
    """Not a deer job at all (its function, hooks or encoding): refused unrun, counted as `refused`."""

    kind = "refused"


class ForbiddenFunctionError(JobRefusedError):
    kind = "forbidden_function"


class NotJsonError(JobRefusedError):
    """Job data that is not a JSON job (e.g. pickled): never deserialized."""

    kind = "not_json"


# --- the command line: failures a user can fix, each printed as one line `deer-worker: <kind>: ...` ---
class UsageError(DeerWorkerError):
    """Options that contradict each other, or a value out of range."""

    kind = "usage"


class MissingFileError(DeerWorkerError):
    kind = "missing_file"


class PermissionDeniedError(DeerWorkerError):
    kind = "permission_denied"


class RedisUnavailableError(DeerWorkerError):
    kind = "redis_unavailable"


class EnqueueUnconfirmedError(DeerWorkerError):
    """A durable enqueue no replica acknowledged in time (or whose primary went away mid-way): the job
    may or may not survive a failover. Enqueue the same `job_id` again; that is idempotent."""

    kind = "unconfirmed"

    def __init__(self, message: str, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class MissingDependencyError(DeerWorkerError):
    """An optional extra or an external program the command needs is not installed."""

    kind = "missing_dependency"


class WorkerStartError(DeerWorkerError):
    """A pool's workers keep dying as they start: restarting them again would loop forever."""

    kind = "worker_start"
