"""Prometheus metrics for ONE worker process, in its own CollectorRegistry.

One exporter port per worker process, not prometheus_client's multiprocess mode: worker i of a pool
serves on `metrics_port + i`, a systemd instance deer-worker@i likewise. Multiprocess mode would need
PROMETHEUS_MULTIPROC_DIR set before import and wiped at every start, a multiprocess_mode on every
gauge, no custom collectors, and scrapes that slow down as pid files pile up. With a port each,
Prometheus' `instance` label already tells the workers apart, a dead worker shows as `up == 0`
instead of silently dropping out of a merged sum, and each registry is plain in-process state.

Every label is bounded: stages and outcomes are fixed here; error kinds are identifiers from code
(an errors.py `kind`, an expiry reason, an exception class name), capped at MAX_ERROR_KINDS; cameras
and classes are fixed when the registry is built (anything else counts as "other"); queues are the
configured ones.
"""

from __future__ import annotations

import re
import time
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from worker import __version__
from worker.constants import LATENCY_BUCKETS, METRICS_PREFIX

STAGES = ("queue_wait", "decode", "preprocess", "inference", "postprocess")
OUTCOMES = ("ok", "failed", "expired", "refused")
OTHER = "other"
BATCH_BUCKETS = (1, 2, 3, 4)
MAX_ERROR_KINDS = 40  # distinct error_kind values per process; later new ones count as "other"
SHADOW_OUTCOMES = ("both", "primary_only", "shadow_only", "neither")
SHADOW_SKIP_REASONS = ("backlog", "stale")
SHADOW_IOU_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
SHADOW_DELTA_BUCKETS = (-0.3, -0.2, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
MAX_ZONE_LABELS = 64  # distinct zone names per process (they come from zones.yaml); later ones count as "other"
_LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def error_kind_label(kind: str) -> str:
    """A code-defined kind as a label: `corrupt_image` stays, `JobTimeoutException` -> `job_timeout_exception`,
    anything that is not an identifier (e.g. text from a message) -> "other"."""
    kind = _CAMEL_HUMP.sub("_", kind).lower()
    return kind if _LABEL_VALUE.match(kind) else OTHER


class WorkerMetrics:
    def __init__(self, *, camera_labels: Iterable[str], class_names: Iterable[str], queues: Iterable[str],
                 worker_name: str = "") -> None:
        self.registry = CollectorRegistry()
        self.cameras = frozenset(camera_labels) | {OTHER}
        self.classes = frozenset(class_names) | {OTHER}
        self.queues = frozenset(queues)
        self._error_kinds = {"none"}
        ns, reg = METRICS_PREFIX, self.registry

        self.stage_duration = Histogram(
            "stage_duration_seconds",
            "Time one job spent in each stage; inference of a batch counts for every job in it.",
            ["stage"], namespace=ns, registry=reg, buckets=LATENCY_BUCKETS)
        self.job_duration = Histogram(
            "job_duration_seconds", "Service time of one job, from taking it off the queue to its result.",
            namespace=ns, registry=reg, buckets=LATENCY_BUCKETS)
        # Observed once per job, so this is the batch size a job ran in, not a count of batch runs.
        self.batch_size = Histogram(
            "batch_size", "Size of the inference batch each job ran in.",
            namespace=ns, registry=reg, buckets=BATCH_BUCKETS)
        self.jobs = Counter(
            "jobs", "Jobs finished, by outcome and error kind.", ["outcome", "error_kind"],
            namespace=ns, registry=reg)
        self.detections = Counter(
            "detections", "Detections the results report (after ignore zones), by camera and class.",
            ["camera", "class_name"], namespace=ns, registry=reg)
        self.zone_detections = Counter(
            "zone_detections", "Detections placed in each include zone (after ignore zones), by camera.",
            ["camera", "zone"], namespace=ns, registry=reg)
        self._zones: set[str] = set()
        # A result the worker did not publish: the job was no longer its own (recovered while it was cut
        # off) or an earlier run of the job had published (a crash between publishing and finishing).
        self.refused_publishes = Counter(
            "refused_publishes", "Results not published because another run of the job owns or published it.",
            ["reason"], namespace=ns, registry=reg)
        self.queue_depth = Gauge(
            "queue_depth", "Jobs waiting in the queue, as last seen by this worker.", ["queue"],
            namespace=ns, registry=reg)
        self.in_progress = Gauge(
            "jobs_in_progress", "Jobs taken and not yet finished.", namespace=ns, registry=reg)
        self.model_loaded = Gauge(
            "model_loaded", "1 for the model this worker has loaded.", ["model", "version", "precision", "batch"],
            namespace=ns, registry=reg)
        self.ready = Gauge(
            "ready", "1 when the model is warm and the worker takes jobs.", namespace=ns, registry=reg)
        self.start_time = Gauge(
            "start_time_seconds", "Unix time this worker's metrics were created.", namespace=ns, registry=reg)
        self.info = Gauge(
            "info", "Always 1; labels name the worker and the package version.", ["worker_name", "version"],
            namespace=ns, registry=reg)
        # The shadow model (worker/serve/shadow.py), per camera; series exist at 0 without a shadow too.
        self.shadow_agreement = Counter(
            "shadow_agreement", "Snapshots the shadow model ran on, by camera and deer_detected agreement with the "
            "primary (both, primary_only, shadow_only, neither).", ["camera", "outcome"], namespace=ns, registry=reg)
        self.shadow_skipped = Counter(
            "shadow_skipped", "Sampled snapshots the shadow did not run on (backlog: jobs kept the worker busy; "
            "stale: held too long).", ["camera", "reason"], namespace=ns, registry=reg)
        self.shadow_errors = Counter(
            "shadow_errors", "Shadow runs that raised (counted, never raised into a job).", ["camera"],
            namespace=ns, registry=reg)
        self.shadow_iou = Histogram(
            "shadow_matched_iou", "IoU of each box pair the primary and the shadow matched (same class, IoU >= 0.5).",
            ["camera"], namespace=ns, registry=reg, buckets=SHADOW_IOU_BUCKETS)
        self.shadow_confidence_delta = Histogram(
            "shadow_confidence_delta", "Shadow minus primary confidence of each matched box pair.",
            ["camera"], namespace=ns, registry=reg, buckets=SHADOW_DELTA_BUCKETS)
        self.shadow_service = Histogram(
            "shadow_service_seconds", "The shadow model's service time for one snapshot (decode to detections).",
            ["camera"], namespace=ns, registry=reg, buckets=LATENCY_BUCKETS)
        self.shadow_model = Gauge(
            "shadow_model_loaded", "1 for the shadow model this worker runs beside the primary.", ["model", "version"],
            namespace=ns, registry=reg)
        ProcessCollector(registry=reg)  # process_resident_memory_bytes etc. per worker

        # Series that exist from the first scrape, so rate() and the dashboard start at 0, not "no data".
        for stage in STAGES:
            self.stage_duration.labels(stage)
        self.jobs.labels("ok", "none")
        for queue in self.queues:
            self.queue_depth.labels(queue)
        for camera in self.cameras:
            for name in self.classes:
                self.detections.labels(camera, name)
            for outcome in SHADOW_OUTCOMES:
                self.shadow_agreement.labels(camera, outcome)
            for reason in SHADOW_SKIP_REASONS:
                self.shadow_skipped.labels(camera, reason)
            self.shadow_errors.labels(camera)
            for histogram in (self.shadow_iou, self.shadow_confidence_delta, self.shadow_service):
                histogram.labels(camera)
        self.start_time.set(time.time())
        self.info.labels(worker_name, __version__).set(1)

    # --- per job ---------------------------------------------------------------------------------
    def observe_job(self, *, stages: dict[str, float], total: float, batch_size: int) -> None:
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; expected some of {STAGES}")
        for stage, seconds in stages.items():
            # queue_wait compares clocks of two hosts; skew must not push the sum negative.
            self.stage_duration.labels(stage).observe(max(seconds, 0.0))
        self.job_duration.observe(max(total, 0.0))
        self.batch_size.observe(batch_size)

    def count_job(self, outcome: str, error_kind: str = "none") -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        self.jobs.labels(outcome, self._error_kind(error_kind)).inc()

    def count_refused_publish(self, reason: str) -> None:
        """reason: not_owner | already_published (rq_compat's verdicts)."""
        self.refused_publishes.labels(reason).inc()

    def count_detections(self, camera_label: str, class_names: list[str]) -> None:
        camera = self._camera(camera_label)
        for name, n in Tally(c if c in self.classes else OTHER for c in class_names).items():
            self.detections.labels(camera, name).inc(n)

    def count_zones(self, camera_label: str, zone_names: list[str]) -> None:
        camera = self._camera(camera_label)
        for zone in zone_names:
            if zone not in self._zones and len(self._zones) < MAX_ZONE_LABELS:
                self._zones.add(zone)
            self.zone_detections.labels(camera, zone if zone in self._zones else OTHER).inc()

    def observe_shadow(self, camera_label: str, *, outcome: str, ious: list[float], confidence_deltas: list[float],
                       seconds: float) -> None:
        if outcome not in SHADOW_OUTCOMES:
            raise ValueError(f"unknown shadow outcome {outcome!r}; expected one of {SHADOW_OUTCOMES}")
        camera = self._camera(camera_label)
        self.shadow_agreement.labels(camera, outcome).inc()
        for iou in ious:
            self.shadow_iou.labels(camera).observe(iou)
        for delta in confidence_deltas:
            self.shadow_confidence_delta.labels(camera).observe(delta)
        self.shadow_service.labels(camera).observe(max(seconds, 0.0))

    def count_shadow_skipped(self, camera_label: str, reason: str) -> None:
        if reason not in SHADOW_SKIP_REASONS:
            raise ValueError(f"unknown shadow skip reason {reason!r}; expected one of {SHADOW_SKIP_REASONS}")
        self.shadow_skipped.labels(self._camera(camera_label), reason).inc()

    def count_shadow_error(self, camera_label: str) -> None:
        self.shadow_errors.labels(self._camera(camera_label)).inc()

    def set_shadow_model(self, *, model: str, version: str) -> None:
        self.shadow_model.clear()
        self.shadow_model.labels(model, version).set(1)

    def _camera(self, camera_label: str) -> str:
        """A configured camera's label, else "other": label sets stay bounded by zones.yaml."""
        return camera_label if camera_label in self.cameras else OTHER

    def _error_kind(self, kind: str) -> str:
        label = error_kind_label(kind)
        if label not in self._error_kinds:
            if len(self._error_kinds) >= MAX_ERROR_KINDS:
                return OTHER  # a runaway source of kinds must not grow the series without bound
            self._error_kinds.add(label)
        return label

    # --- state -----------------------------------------------------------------------------------
    def set_queue_depth(self, queue: str, depth: int) -> None:
        if queue not in self.queues:
            raise ValueError(f"queue {queue!r} was not declared; known: {sorted(self.queues)}")
        self.queue_depth.labels(queue).set(depth)

    def job_started(self, n: int = 1) -> None:
        self.in_progress.inc(n)

    def job_finished(self, n: int = 1) -> None:
        self.in_progress.dec(n)

    def set_model(self, *, model: str, version: str, precision: str, batch: int) -> None:
        self.model_loaded.clear()  # one model at a time: the old label set must not linger at 1
        self.model_loaded.labels(model, version, precision, str(batch)).set(1)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
