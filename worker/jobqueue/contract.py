"""The job contract: a versioned JSON payload, parsed and checked the same way by producer and worker.

    {"v": 1,
     "camera_id": "10cea9e4511f",
     "captured_at": 1764201600.25,           # unix seconds (float) or ISO 8601; optional
     "snapshot": {"key": "deer:snap:<id>"},   # or {"b64": "<base64 JPEG/PNG>"}, or {"path": "/var/..."}
     "job_id": "optional-caller-id",
     "model": "optional model name the job requires"}

Version 2 is version 1 plus any of these optional per-job settings (a producer writes "v": 2 only
when it uses one, so a v1 job still reaches workers that speak only v1):
     "conf": 0.4,                             # confidence threshold in (0, 1] for this job
     "classes": ["deer", "person"],           # class names to keep (each must be the model's)
     "camera": {"clahe": true, "roi": {...}},  # override of the camera's zones.yaml entry, partial allowed;
                                              # its CLAHE keys must agree with the model's (admission.py)
     "max_age": 3.0                           # seconds > 0: replaces the worker's max_age for this job
A worker that speaks only v1 fails a v2 job with bad_payload (unsupported version): roll out workers first.

The RQ job is data only (DeerJob): the worker never imports or calls what a job names.

A key snapshot (the producer's default) holds the raw bytes in a Redis string under
`deer:snap:`, so the job itself stays small; the worker reads only keys under that prefix. A path
snapshot is for same-host producers and must lie inside one of the configured snapshot directories
(after resolving symlinks), so a job cannot make the worker read arbitrary files.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import stat
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from collections.abc import Callable

from rq.job import Job

from worker.cameras import CameraSettings, override_settings
from worker.constants import (DEFAULT_MAX_SNAPSHOT_BYTES, PAYLOAD_VERSION, PAYLOAD_VERSION_SETTINGS,
                              PAYLOAD_VERSIONS, SNAPSHOT_KEY_PREFIX)
from worker.errors import ConfigError, PayloadError, PayloadTooLargeError, SnapshotFileError, SnapshotMissingError
from worker.jobqueue.rq_compat import names_hooks


_CAMERA_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")  # no ":": RQ splits registry keys on it
_KEYS = {"v", "camera_id", "captured_at", "snapshot", "job_id", "model"}
_SETTINGS_KEYS = {"conf", "classes", "camera", "max_age"}  # version 2 only
_SNAPSHOT_KEY = re.compile(r"^" + re.escape(SNAPSHOT_KEY_PREFIX) + r"[A-Za-z0-9_.-]{1,128}$")


class DeerJob(Job):
    """An RQ job that is data only. RQ imports and calls a job's callbacks (on_success, on_failure,
    on_stopped) and sends its webhooks from whatever process handles it, the pool's recovery included;
    whoever enqueues chooses them, so deer processes never run or send them (and workers refuse such jobs)."""

    success_callback = failure_callback = stopped_callback = property(lambda self: None)

    def send_webhooks(self, status, *, exc_string=None) -> None:
        return None

    @property
    def has_hooks(self) -> bool:
        return names_hooks(self)


@dataclass(frozen=True)
class SnapshotJob:
    camera_id: str
    captured_at: float | None  # unix seconds
    snapshot_b64: str | None
    snapshot_path: str | None
    job_id: str | None = None
    model: str | None = None
    snapshot_key: str | None = None
    conf: float | None = None  # the per-job settings of version 2; None: the camera's own
    classes: tuple[str, ...] | None = None
    camera: dict[str, Any] | None = None  # raw override, checked by parse_payload, applied by admission
    max_age: float | None = None

    @property
    def has_settings(self) -> bool:
        return any(v is not None for v in (self.conf, self.classes, self.camera, self.max_age))

    def settings_for(self, base: CameraSettings) -> CameraSettings:
        """The camera's settings with this job's camera override, classes and conf applied, in that order."""
        settings = override_settings(base, self.camera, "camera") if self.camera is not None else base
        if self.classes is not None:
            settings = replace(settings, classes=self.classes)
        if self.conf is not None:
            settings = replace(settings, confidence=self.conf)
        return settings

    def to_payload(self) -> dict[str, Any]:
        version = PAYLOAD_VERSION_SETTINGS if self.has_settings else PAYLOAD_VERSION
        payload: dict[str, Any] = {"v": version, "camera_id": self.camera_id}
        if self.captured_at is not None:
            payload["captured_at"] = self.captured_at
        if self.snapshot_key is not None:
            payload["snapshot"] = {"key": self.snapshot_key}
        elif self.snapshot_b64 is not None:
            payload["snapshot"] = {"b64": self.snapshot_b64}
        else:
            payload["snapshot"] = {"path": self.snapshot_path}
        if self.job_id:
            payload["job_id"] = self.job_id
        if self.model:
            payload["model"] = self.model
        for key in ("conf", "camera", "max_age"):
            if getattr(self, key) is not None:
                payload[key] = getattr(self, key)
        if self.classes is not None:
            payload["classes"] = list(self.classes)
        return payload


def job_lifetime(*, queued_ttl: int, retries: int, job_timeout: int) -> int:
    """Seconds after enqueueing within which a job can still run: its queued time, then every try up to
    its abandonment (the timeout plus a minute of heartbeat and recovery). What a job's snapshot key and
    its published marker must outlive."""
    return queued_ttl + (retries + 1) * (job_timeout + 60)


def _parse_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise PayloadError("captured_at: expected unix seconds or an ISO 8601 string, got a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise PayloadError(f"captured_at: {value!r} is not a valid unix time")
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(f"captured_at: {value[:40]!r} is not ISO 8601") from None
        if parsed.tzinfo is None:
            raise PayloadError("captured_at: an ISO 8601 time needs a timezone (e.g. Z or +00:00)")
        return parsed.timestamp()
    raise PayloadError(f"captured_at: expected unix seconds or an ISO 8601 string, got {type(value).__name__}")


def snapshot_key_of(payload: Any) -> str | None:
    """The payload's snapshot key if it names a valid one, else None (parse_payload says what is wrong).
    Lets a worker fetch the bytes in the round trip that registers the job, before the full check."""
    snapshot = payload.get("snapshot") if isinstance(payload, dict) else None
    key = snapshot.get("key") if isinstance(snapshot, dict) else None
    return key if isinstance(key, str) and _SNAPSHOT_KEY.match(key) else None


def parse_payload(payload: Any, *, max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES) -> SnapshotJob:
    """Check a payload against the contract; raise PayloadError naming the bad field."""
    if not isinstance(payload, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(payload).__name__}")
    version = payload.get("v")
    if isinstance(version, bool) or version not in PAYLOAD_VERSIONS:  # True == 1 in Python, not in the contract
        raise PayloadError(f"v: unsupported payload version {version!r} "
                           f"(this worker speaks {', '.join(map(str, PAYLOAD_VERSIONS))})")
    allowed = _KEYS | _SETTINGS_KEYS if version == PAYLOAD_VERSION_SETTINGS else _KEYS
    unknown = sorted(set(payload) - allowed)
    if unknown:
        hint = " (per-job settings need \"v\": 2)" if set(unknown) & _SETTINGS_KEYS else ""
        raise PayloadError(f"unknown keys {unknown}{hint}")
    settings = _parse_job_settings(payload)
    camera_id = payload.get("camera_id")
    if not isinstance(camera_id, str) or not _CAMERA_ID.match(camera_id):
        raise PayloadError(f"camera_id: expected 1-64 characters of [A-Za-z0-9_.:-], got {camera_id!r:.80}")
    job_id = payload.get("job_id")
    if job_id is not None and (not isinstance(job_id, str) or not _JOB_ID.match(job_id)):
        raise PayloadError(f"job_id: expected 1-128 characters of [A-Za-z0-9_.-], got {job_id!r:.80}")
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise PayloadError("model: expected a model name string")
    snapshot = payload.get("snapshot")
    if not isinstance(snapshot, dict) or len(snapshot) != 1 or not ({"key", "b64", "path"} & set(snapshot)):
        raise PayloadError('snapshot: expected {"key": "deer:snap:..."}, {"b64": "..."} or {"path": "..."}')
    key, b64, path = snapshot.get("key"), snapshot.get("b64"), snapshot.get("path")
    if "key" in snapshot:
        if not isinstance(key, str) or not _SNAPSHOT_KEY.match(key):
            raise PayloadError(f"snapshot.key: expected {SNAPSHOT_KEY_PREFIX}<id>, got {key!r:.80}")
        return SnapshotJob(camera_id, _parse_time(payload.get("captured_at")), None, None, job_id, model, key,
                           **settings)
    if b64 is not None:
        if not isinstance(b64, str):
            raise PayloadError("snapshot.b64: expected a base64 string")
        # base64 is 4/3 of the bytes: refuse before decoding anything oversized.
        if len(b64) > 4 * math.ceil(max_snapshot_bytes / 3) + 4:
            raise PayloadTooLargeError(
                f"snapshot.b64: {len(b64)} base64 characters exceed the {max_snapshot_bytes}-byte snapshot limit")
    elif not isinstance(path, str) or not path or "\x00" in path:
        raise PayloadError("snapshot.path: expected a non-empty file path")
    return SnapshotJob(camera_id, _parse_time(payload.get("captured_at")), b64, path, job_id, model, **settings)


def _positive_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _parse_job_settings(payload: dict) -> dict[str, Any]:
    """The version 2 per-job settings, checked; {} for a v1 payload."""
    conf, classes, camera, max_age = (payload.get(k) for k in ("conf", "classes", "camera", "max_age"))
    if conf is not None and (not _positive_number(conf) or conf > 1):
        raise PayloadError(f"conf: expected a number in (0, 1], got {conf!r:.40}")
    if classes is not None and (not isinstance(classes, list) or not classes
                                or not all(isinstance(c, str) and c for c in classes)):
        raise PayloadError("classes: expected a non-empty list of class names")
    if max_age is not None and not _positive_number(max_age):
        raise PayloadError(f"max_age: expected seconds > 0, got {max_age!r:.40}")
    if camera is not None:
        if not isinstance(camera, dict):
            raise PayloadError("camera: expected an object with a camera entry's keys (partial allowed)")
        try:
            override_settings(CameraSettings(), camera, "camera")
        except ConfigError as exc:
            raise PayloadError(str(exc)) from None
    return {"conf": float(conf) if conf is not None else None,
            "classes": tuple(classes) if classes is not None else None,
            "camera": camera, "max_age": float(max_age) if max_age is not None else None}


def snapshot_bytes(job: SnapshotJob, *, max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
                   snapshot_dirs: list[str] | tuple[str, ...] = (),
                   fetch_key: Callable[[str], bytes | None] | None = None) -> bytes:
    """The snapshot's encoded bytes: from its Redis key (via fetch_key), base64, or an allowed file."""
    if job.snapshot_key is not None:
        data = fetch_key(job.snapshot_key) if fetch_key is not None else None
        if data is None:
            raise SnapshotMissingError(f"snapshot.key: {job.snapshot_key} does not exist (expired or never written)")
        if len(data) > max_snapshot_bytes:
            raise PayloadTooLargeError(f"snapshot is {len(data)} bytes, over the {max_snapshot_bytes}-byte limit")
        return data
    if job.snapshot_b64 is not None:
        try:
            data = base64.b64decode(job.snapshot_b64, validate=True)
        except (binascii.Error, ValueError):
            raise PayloadError("snapshot.b64: not valid base64") from None
        if len(data) > max_snapshot_bytes:
            raise PayloadTooLargeError(f"snapshot is {len(data)} bytes, over the {max_snapshot_bytes}-byte limit")
        return data
    return read_confined(job.snapshot_path or "", snapshot_dirs, max_snapshot_bytes)


def read_confined(path: str, allowed_dirs: list[str] | tuple[str, ...], max_bytes: int) -> bytes:
    """Read `path` only if, with symlinks resolved, it lies inside an allowed directory."""
    if not allowed_dirs:
        raise SnapshotFileError("snapshot.path: this worker accepts no file snapshots (snapshot_dirs is empty)")
    real = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(d)) for d in allowed_dirs]
    if not any(real == root or root in real.parents for root in roots):
        raise SnapshotFileError(f"snapshot.path: {path!r} is outside the allowed snapshot directories")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: no symlink swapped in since.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SnapshotFileError(f"snapshot.path: {path!r} does not exist") from None
    except PermissionError:
        raise SnapshotFileError(f"snapshot.path: {path!r} is not readable by the worker") from None
    except OSError as exc:  # e.g. a file used as a directory, a name too long, a symlink loop
        raise SnapshotFileError(f"snapshot.path: {path!r} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SnapshotFileError(f"snapshot.path: {path!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise SnapshotFileError(f"snapshot.path: {path!r} is not a regular file")
        if info.st_size > max_bytes:
            raise PayloadTooLargeError(f"snapshot file is {info.st_size} bytes, over the {max_bytes}-byte limit")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read(max_bytes + 1)
