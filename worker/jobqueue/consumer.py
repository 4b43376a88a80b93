"""The queue glue: an RQ SimpleWorker (no fork per job) around a Detector that knows nothing of Redis.

One job is dequeued the usual way (blocking); when batching is on, up to three more are drained
without waiting, each registered as started at once so a crash cannot lose it, then the batch runs
as one inference and every job is finished or failed on its own with RQ's bookkeeping.

Round trips are what a job costs here beyond inference (a local one is 0.1-0.3 ms with RQ's Python
around it), so the worker folds RQ's: registering a job and fetching its snapshot is one MULTI,
back-to-back heartbeats are one, and the end-of-batch writes share one pipeline.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from worker.cameras import CameraBook, CameraSettings
from worker.config import WorkerConfig
from worker.jobqueue.connections import SERIALIZER
from worker.constants import REDIS_MAX_BACKOFF
from worker.inference.detector import Detector, DetectionResult
from worker.errors import DeerWorkerError, ForbiddenFunctionError, PayloadError
from worker.jobqueue.contract import SnapshotJob, parse_payload, snapshot_bytes, snapshot_key_of
from worker.jobqueue.producer import LATEST_KEY
from worker.jobqueue.recovery import orphans, requeue_orphans
from worker.jobqueue.results import ModelInfo, build_message, publish
from worker.tasks import ALLOWED_FUNCTIONS, DeerJob

log = logging.getLogger(__name__)

HEARTBEAT_MARGIN = 10  # s beyond the job timeout before a silent worker's job counts as abandoned
WORKER_TTL = 30  # worker key TTL; RQ blocks on dequeue for WORKER_TTL - 15 s, so maintenance runs that often
MAINTENANCE_INTERVAL = 10
HEARTBEAT_REPEAT = 1.0  # s; a full worker heartbeat repeated sooner than this changes nothing


class ModelUnavailableError(PayloadError):
    kind = "model_unavailable"


class JobExpired(Exception):
    """Not an error: the snapshot is too old to be worth inferring."""

    def __init__(self, reason: str, age: float) -> None:
        super().__init__(reason)
        self.reason, self.age = reason, age


@dataclass
class _Taken:
    job: Job
    queue: Queue
    execution: Execution
    prefetched: dict[str, bytes | None]  # snapshot key -> bytes, read in the round trip that registered the job
    started: float = field(default_factory=time.time)
    snapshot: SnapshotJob | None = None
    settings: CameraSettings | None = None
    data: bytes | None = None
    message: dict | None = None
    exc_info: tuple | None = None
    result: DetectionResult | None = None
    final: bool = True  # False when RQ may retry the job, which then still needs its snapshot


class DeerWorker(SimpleWorker):
    # RQ retries a lost Redis inside its dequeue loop, doubling the wait up to 60 s: after a 20 s outage
    # a worker idled 11 s with Redis back. Capped like the service loop's reconnect backoff.
    max_connection_wait_time = REDIS_MAX_BACKOFF

    def __init__(self, queues, *, detector: Detector, cameras: CameraBook, config: WorkerConfig,
                 metrics=None, **kwargs) -> None:
        kwargs.setdefault("serializer", SERIALIZER)
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_class", DeerJob)
        super().__init__(queues, **kwargs)
        for queue in self.queues:  # RQ's registry maintenance fetches jobs with the queue's class
            queue.job_class = self.job_class
        self.detector, self.cameras, self.config, self.metrics = detector, cameras, config, metrics
        spec = detector.spec
        self.model_info = ModelInfo(spec.name, spec.version, spec.weights, detector.precision)
        self._orphan_suspects: dict[str, set[str]] = {}  # queue -> orphans seen by the last maintenance
        self._full_heartbeat_at = float("-inf")  # monotonic time of the last heartbeat with the full worker TTL

    def _set_ip_address(self, connection) -> None:
        # The embedded in-process server answers CLIENT INFO in a shape RQ cannot parse; the address
        # is only informational, so an unknown one must not stop the worker.
        try:
            super()._set_ip_address(connection)
        except Exception:  # noqa: BLE001
            self.ip_address = "unknown"

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # RQ's SimpleWorker uses timeout + 60 s; ours is shorter so abandoned jobs come back sooner.
        return int(job.timeout or self.config.job_timeout) + HEARTBEAT_MARGIN

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        # RQ sends three commands a beat and beats three times around every job (after it, before the
        # next dequeue, after the dequeue). One pipeline a beat, and a full beat repeated within
        # HEARTBEAT_REPEAT is skipped: the key still has nearly all of its worker_ttl + 60 s to live.
        # A beat with another TTL (a job's, shorter) re-arms the next full one.
        if pipeline is not None:
            if timeout is not None:
                self._full_heartbeat_at = float("-inf")
            return super().heartbeat(timeout, pipeline=pipeline)
        if timeout is None and time.monotonic() - self._full_heartbeat_at < HEARTBEAT_REPEAT:
            return None
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()
        self._full_heartbeat_at = time.monotonic() if timeout is None else float("-inf")
        return None

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is None and state == self._state:
            return  # RQ re-sends IDLE before every dequeue; the worker key already says so
        super().set_state(state, pipeline=pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # RQ beats the job once more here to keep it alive while callbacks run; deer jobs have none,
        # and the success/failure pipeline that follows sets the job's final TTL.
        job.ended_at = now()

    # --- taking jobs -----------------------------------------------------------------------------
    def execute_job(self, job: Job, queue: Queue) -> None:
        taken = [self._take(job, queue)]
        while len(taken) < self.detector.max_batch:  # drain a backlog; never wait to fill a batch
            more = self.queue_class.dequeue_any(self._ordered_queues, None, connection=self.connection,
                                                job_class=self.job_class, serializer=self.serializer,
                                                death_penalty_class=self.death_penalty_class)
            if more is None:
                break
            taken.append(self._take(*more))
        if self.metrics:
            self.metrics.job_started(len(taken))
        done_keys: list[str] = []
        try:
            done_keys = self._run(taken)
        finally:
            if self.metrics:
                self.metrics.job_finished(len(taken))
            self._end_batch(done_keys)

    def _take(self, job: Job, queue: Queue) -> _Taken:
        """Register a dequeued job as started and read its snapshot, in one MULTI round trip.

        RQ's prepare_execution and prepare_job_execution (two pipelines), with the snapshot GET: from
        this point a dead worker's job is in the StartedJobRegistry under its name (recovery retries
        it); before it, the job sits in RQ's intermediate list (recovery requeues orphans there).
        """
        key = self._snapshot_key(job)
        ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipe:
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)  # status STARTED, started_at, worker_name
            pipe.persist(job.key)
            if len(self.queues) == 1:  # RQ LMOVEs into the intermediate list only when it serves one queue
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            if key is not None:
                pipe.get(key)
            replies = pipe.execute()
        self.executions[execution.id] = execution
        return _Taken(job, queue, execution, {key: replies[-1]} if key is not None else {})

    @staticmethod
    def _snapshot_key(job: Job) -> str | None:
        """The key of a deer job's snapshot, to prefetch; None for anything _admit will refuse or read otherwise."""
        try:
            return snapshot_key_of(_payload_of(job))
        except Exception:  # noqa: BLE001 - a refused or undecodable job: _admit fails it with the reason
            return None

    def _end_batch(self, done_keys: list[str]) -> None:
        """One pipeline: drop finished jobs' snapshots, go idle, read queue depth for the gauge."""
        with self.connection.pipeline(transaction=False) as pipe:
            if done_keys:
                pipe.delete(*done_keys)
            self.set_state(WorkerStatus.IDLE, pipeline=pipe)
            if self.metrics:
                for queue in self.queues:
                    pipe.llen(queue.key)
            replies = pipe.execute()
        if self.metrics:
            for queue, depth in zip(self.queues, replies[-len(self.queues):]):
                self.metrics.set_queue_depth(queue.name, depth)

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        # Jobs orphaned in RQ's intermediate list with no death to react to (e.g. Redis crashed between
        # a worker's LMOVE and its reply): requeue those seen orphaned one maintenance interval ago.
        for queue in self.queues:
            requeue_orphans(self.connection, queue.name, self._orphan_suspects.get(queue.name, set()))
        self._orphan_suspects = {queue.name: orphans(self.connection, queue.name) for queue in self.queues}
        if self.metrics:
            self._report_queue_depth()  # also while idle, so a backlog on a stuck pool still shows

    def _report_queue_depth(self) -> None:
        for queue in self.queues:
            self.metrics.set_queue_depth(queue.name, queue.count)

    def _run(self, taken: list[_Taken]) -> list[str]:
        """Admit, infer, publish and finish the batch; returns the snapshot keys no retry will need."""
        to_infer = [item for item in taken if self._admit(item)]
        if to_infer:
            timeout = max(int(item.job.timeout or self.config.job_timeout) for item in to_infer)
            try:
                with self.death_penalty_class(timeout, JobTimeoutException, job_id=to_infer[0].job.id):
                    results = self.detector.detect_batch([(i.data, i.settings) for i in to_infer])
            except Exception:  # the whole batch failed (timeout, runtime error): each job fails with it
                exc_info = sys.exc_info()
                for item in to_infer:
                    self._fail(item, exc_info, retry=True)
            else:
                for item, result in zip(to_infer, results):
                    if isinstance(result, Exception):
                        self._fail(item, (type(result), result, result.__traceback__), retry=False)
                    else:
                        self._succeed(item, result)
        publish(self.connection, [i.message for i in taken if i.message],
                channel=self.config.results_channel, stream=self.config.results_stream,
                stream_maxlen=self.config.results_stream_maxlen)
        for item in taken:
            if item.exc_info is not None:
                self._finalize_failure(item.job, item.queue, item.execution, item.exc_info)
            else:
                self._finalize_success(item.job, item.queue, item.execution, item.message)
        return [i.snapshot.snapshot_key for i in taken if i.final and i.snapshot and i.snapshot.snapshot_key]

    def _admit(self, item: _Taken) -> bool:
        """Check function, payload, age and input; False when the job already has its outcome."""
        try:
            item.snapshot = parse_payload(_payload_of(item.job), max_snapshot_bytes=self.config.max_snapshot_bytes)
            item.settings = self.cameras.get(item.snapshot.camera_id)
            if item.snapshot.model and item.snapshot.model != self.detector.spec.name:
                raise ModelUnavailableError(
                    f"job asks for model {item.snapshot.model!r}; this worker serves {self.detector.spec.name!r}")
            self._check_fresh(item)
            if not item.settings.enabled:
                raise JobExpired("camera_disabled", 0.0)
            prefetched = item.prefetched
            item.data = snapshot_bytes(item.snapshot, max_snapshot_bytes=self.config.max_snapshot_bytes,
                                       snapshot_dirs=self.config.snapshot_dirs,
                                       fetch_key=lambda key: prefetched[key] if key in prefetched
                                       else self.connection.get(key))
            return True
        except JobExpired as expired:
            self._expire(item, expired)
        except DeerWorkerError:
            self._fail(item, sys.exc_info(), retry=False)
        except Exception:  # e.g. a pickled (non-JSON) job whose data cannot be deserialized
            exc = sys.exc_info()[1]
            refused = PayloadError(f"job data is not a valid JSON job ({type(exc).__name__}: {exc})")
            refused.kind = "not_json"
            self._fail(item, (PayloadError, refused, None), retry=False)
        return False

    def _check_fresh(self, item: _Taken) -> None:
        snapshot = item.snapshot
        reference = snapshot.captured_at
        if reference is None and item.job.enqueued_at is not None:
            reference = item.job.enqueued_at.timestamp()
        age = max(0.0, item.started - reference) if reference is not None else 0.0
        if age > self.config.max_age:
            raise JobExpired("too_old", age)
        if self.config.latest_only and snapshot.captured_at is not None:
            latest = self.connection.hget(LATEST_KEY, snapshot.camera_id)
            if latest:
                latest_at, _, latest_id = latest.decode().partition("|")
                if latest_id != item.job.id and float(latest_at) > snapshot.captured_at:
                    raise JobExpired("superseded", age)

    # --- outcomes --------------------------------------------------------------------------------
    def _base(self, item: _Taken) -> dict:
        snapshot = item.snapshot
        return {"job_id": item.job.id, "camera_id": snapshot.camera_id if snapshot else "",
                "captured_at": snapshot.captured_at if snapshot else None, "worker": self.name,
                "model": self.model_info}

    def _queue_wait(self, item: _Taken) -> float:
        enqueued = item.job.enqueued_at
        return max(0.0, item.started - enqueued.timestamp()) if enqueued is not None else 0.0

    def _camera_label(self, item: _Taken) -> str:
        return item.settings.label if item.settings else "other"

    def _succeed(self, item: _Taken, result: DetectionResult) -> None:
        timings = {"queue_wait": self._queue_wait(item), **result.timings.as_dict()}
        item.message = build_message(status="ok", batch_size=result.batch_size, detections=result.detections,
                                     image_size=(result.image_width, result.image_height), timings=timings,
                                     **self._base(item))
        if self.metrics:
            stages = {"queue_wait": timings["queue_wait"], "decode": timings["decode"],
                      "preprocess": timings["preprocess"], "inference": timings["infer"],
                      "postprocess": timings["postprocess"]}
            self.metrics.observe_job(stages=stages, total=time.time() - item.started, batch_size=result.batch_size)
            self.metrics.count_job("ok")
            self.metrics.count_detections(self._camera_label(item),
                                          [result.detections.name_of(int(c)) for c in result.detections.class_id])

    def _expire(self, item: _Taken, expired: JobExpired) -> None:
        item.message = build_message(status="expired", timings={"queue_wait": self._queue_wait(item)},
                                     error_kind=expired.reason,
                                     error=f"snapshot not inferred: {expired.reason} (age {expired.age:.1f} s, "
                                           f"max_age {self.config.max_age} s)", **self._base(item))
        if self.metrics:
            self.metrics.count_job("expired", expired.reason)

    def _fail(self, item: _Taken, exc_info: tuple, *, retry: bool) -> None:
        exc = exc_info[1]
        kind = getattr(exc, "kind", type(exc).__name__)
        item.exc_info = exc_info
        if retry:
            item.final = not item.job.retries_left
        else:
            item.job.retries_left = 0  # bad input stays bad: retrying it only wastes a slot
        item.message = build_message(status="failed", timings={"queue_wait": self._queue_wait(item)},
                                     error_kind=kind, error=str(exc), **self._base(item))
        if self.metrics:
            outcome = "refused" if kind in ("forbidden_function", "not_json") else "failed"
            self.metrics.count_job(outcome, kind)
        log.warning("job %s failed: %s: %s", item.job.id, kind, exc)


def _payload_of(job: Job):
    """The payload argument of an allow-listed deer job; raises the reason a job is refused."""
    if job.func_name not in ALLOWED_FUNCTIONS:
        raise ForbiddenFunctionError(f"function {job.func_name!r} is not allow-listed for deer workers")
    if getattr(job, "has_hooks", False):
        raise ForbiddenFunctionError("job callbacks and webhooks are not allowed on deer jobs")
    if job.kwargs or len(job.args) != 1:
        raise PayloadError("a snapshot job takes exactly one payload argument")
    return job.args[0]
