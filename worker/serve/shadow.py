"""A shadow model on live traffic (issue 17): worker.yaml `shadow_model:` (a name under models_dir, or a path)
runs beside the primary on a `shadow_sample` share of the snapshots, for an A/B look before a promote.

It never delays, changes or fails a primary result:
- a snapshot is offered only after its batch's results are published, and only a served (ok) one;
- the shadow runs only between runs of batches, when no job is waiting in the worker's queues, one
  snapshot at a time (one inference: a job that arrives waits at most that), re-checking the queues
  before each one;
- it takes at most SHADOW_MAX_SHARE of wall time (after a run of t s it rests t * (1/share - 1)): the idle
  time of a loaded worker is what keeps its queueing short;
- what the shadow holds is capped (SHADOW_PENDING snapshots); a worker that stays busy drops the oldest
  (deer_worker_shadow_skipped_total{reason="backlog"}), one held past SHADOW_MAX_AGE is dropped unrun
  ("stale");
- any exception in the shadow (offer or run) is logged and counted (deer_worker_shadow_errors_total),
  never raised into the consumer.

The answers are compared with worker.evaluation.agreement (deer_detected both / primary_only /
shadow_only / neither, same-class boxes matched at IoU >= 0.5): counted per camera, matched IoU and
confidence deltas observed (each model's deer decision by its own alert classes), the shadow's service time observed, and every disagreement written with both
answers to the capped stream SHADOW_DISAGREEMENTS_STREAM.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from worker.constants import (
    SHADOW_DISAGREEMENTS_STREAM,
    SHADOW_MAX_AGE,
    SHADOW_MAX_SHARE,
    SHADOW_PENDING,
    SHADOW_STREAM_MAXLEN,
)
from worker.evaluation.agreement import agreement

log = logging.getLogger(__name__)
OUTCOME_NAMES = {"both": "both", "a_only": "primary_only", "b_only": "shadow_only", "neither": "neither"}


@dataclass
class ShadowItem:
    job_id: str
    camera_id: str
    label: str  # the camera's metrics label
    data: bytes
    settings: object  # the CameraSettings the primary ran with
    primary: object  # the primary's Detections
    primary_model: str
    primary_alert_classes: tuple[str, ...]  # the primary model's alert classes (its deer decision)
    held_at: float = field(default_factory=time.monotonic)


class ShadowRunner:
    """The shadow detector, the snapshots held for it, and what it reports (metrics, disagreement stream)."""

    def __init__(self, detector, sample: float, *, metrics=None, connection=None,
                 stream: str = SHADOW_DISAGREEMENTS_STREAM, stream_maxlen: int = SHADOW_STREAM_MAXLEN,
                 capacity: int = SHADOW_PENDING, max_age: float = SHADOW_MAX_AGE,
                 max_share: float = SHADOW_MAX_SHARE, draw: Callable[[], float] = random.random) -> None:
        self.detector, self.sample, self.metrics, self.connection = detector, sample, metrics, connection
        self.stream, self.stream_maxlen, self.max_age, self.draw = stream, stream_maxlen, max_age, draw
        self.pending: deque[ShadowItem] = deque()
        self.capacity = capacity
        self.rest = 1.0 / max_share - 1.0  # seconds of rest per second the shadow ran
        self.next_run = 0.0  # monotonic time before which the shadow does not run (its share of wall time)
        self.ran = 0  # snapshots the shadow answered (tests and the benchmark read it)

    @property
    def model_name(self) -> str:
        spec = self.detector.spec
        return f"{spec.name} ({spec.version})"

    def close(self) -> None:
        """Drop what is held and release the shadow's compiled models (at the worker's shutdown)."""
        self.pending.clear()
        self.detector.close()

    # --- the consumer's two hooks -----------------------------------------------------------------
    def offer(self, *, job_id: str, camera_id: str, label: str, data: bytes, settings, primary,
              primary_model: str, primary_alert_classes: tuple[str, ...]) -> None:
        """A published, ok snapshot: held for the shadow when sampled. Never raises."""
        try:
            if data is None or self.draw() >= self.sample:
                return
            if len(self.pending) >= self.capacity:
                dropped = self.pending.popleft()
                self._skipped(dropped, "backlog")
            self.pending.append(ShadowItem(job_id, camera_id, label, data, settings, primary, primary_model,
                                           primary_alert_classes))
        except Exception as exc:  # noqa: BLE001 - the shadow never fails a job
            self._error(label, exc)

    def run_pending(self, job_waiting: Callable[[], bool]) -> int:
        """Run held snapshots one at a time while no job waits; -> how many ran. Never raises."""
        ran = 0
        while self.pending:
            try:
                if job_waiting():
                    return ran
            except Exception as exc:  # noqa: BLE001 - cannot tell: leave the shadow for later
                log.warning("shadow: could not check the queues (%s); shadow work waits", exc)
                return ran
            if time.monotonic() < self.next_run:
                return ran  # its share of wall time is spent: the held snapshots wait (or go stale / backlog)
            item = self.pending.popleft()
            if time.monotonic() - item.held_at > self.max_age:
                self._skipped(item, "stale")
                continue
            started = time.monotonic()
            self._run(item)
            self.next_run = time.monotonic() + (time.monotonic() - started) * self.rest
            ran += 1
        return ran

    # --- inside ------------------------------------------------------------------------------------
    def _run(self, item: ShadowItem) -> None:
        try:
            started = time.perf_counter()
            result = self.detector.detect(item.data, item.settings)
            seconds = time.perf_counter() - started
            found = agreement(item.primary, result.detections, alert_a=item.primary_alert_classes,
                              alert_b=self.detector.spec.alert_classes)
            outcome = OUTCOME_NAMES[found.deer]
            if self.metrics:
                self.metrics.observe_shadow(item.label, outcome=outcome, ious=found.ious,
                                            confidence_deltas=found.confidence_deltas, seconds=seconds)
            if not found.agrees and self.connection is not None:
                self.connection.xadd(self.stream, {
                    "job_id": item.job_id, "camera_id": item.camera_id, "outcome": outcome,
                    "severity": round(found.severity, 4), "matched": found.matched,
                    "primary_only_boxes": found.a_unmatched, "shadow_only_boxes": found.b_unmatched,
                    "primary_model": item.primary_model, "shadow_model": self.model_name,
                    "primary": json.dumps(item.primary.to_json()), "shadow": json.dumps(result.detections.to_json()),
                    "at": time.time()}, maxlen=self.stream_maxlen, approximate=True)
            self.ran += 1
        except Exception as exc:  # noqa: BLE001 - a bad snapshot, a lost Redis, a runtime error: counted
            self._error(item.label, exc)

    def _skipped(self, item: ShadowItem, reason: str) -> None:
        if self.metrics:
            self.metrics.count_shadow_skipped(item.label, reason)

    def _error(self, label: str, exc: BaseException) -> None:
        log.warning("shadow %s: %s: %s", self.model_name, type(exc).__name__, exc)
        try:
            if self.metrics:
                self.metrics.count_shadow_error(label)
        except Exception:  # noqa: BLE001
            pass
