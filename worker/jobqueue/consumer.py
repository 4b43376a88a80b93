"""The queue glue: an RQ SimpleWorker (no fork per job) around a Detector that knows nothing of Redis.

One job is dequeued the usual way (blocking); when batching is on, up to three more are drained
without waiting, each registered as started at once so a crash cannot lose it, then the batch runs
as one inference and every job is finished or failed on its own with RQ's bookkeeping.

Overlap: while a batch is in inference (main thread, where RQ's timeout signal works), a preparation
thread takes the next batch - at most one ahead - registers it as started (its heartbeat TTL covers
the wait for the batch in hand), reads its snapshots and decodes and letterboxes them. So a worker
under a backlog keeps the runtime busy, and a high-priority job (front of the queue) waits at most
the batch in inference and the one taken ahead. When nothing is queued the loop returns to RQ's
blocking dequeue: one job in flight takes the same path as without overlap.

Results are published once: the publish and the proof that the job is still this run's are one Lua
step on the server (rq_compat.PublishOnce); a refused publish is logged and counted, and a job this
run no longer owns is left to its new owner.

The consumer only takes, batches and finishes: what runs, expires or is rejected is admission.py's
verdict; what each outcome becomes (message, metric labels, registry) is outcomes.py's; every use of
RQ's internals is in rq_compat.py (BatchWorker, the base class).

Round trips are what a job costs here beyond inference (a local one is 0.1-0.3 ms with RQ's Python
around it), so the worker folds RQ's: registering a job and fetching its snapshot is one MULTI,
back-to-back heartbeats are one, a batch's results are one script call, and the end-of-batch writes
share one pipeline.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import JobTimeoutException
from rq.worker import WorkerStatus

from worker.cameras import CameraBook, CameraSettings
from worker.config import WorkerConfig
from worker.constants import LATEST_KEY, PUBLISHED_KEY_PREFIX, REDIS_MAX_BACKOFF
from worker.errors import DeerWorkerError, InputError
from worker.inference.detector import Detector, DetectionResult, PreparedBatch
from worker.jobqueue import admission, outcomes
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.contract import DeerJob, SnapshotJob, job_lifetime, snapshot_bytes
from worker.jobqueue.recovery import orphans, requeue_orphans
from worker.jobqueue.results import ModelInfo, encode
from worker.jobqueue.rq_compat import ALREADY_PUBLISHED, NOT_OWNER, BatchWorker, Publication, PublishOnce

log = logging.getLogger(__name__)


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
    outcome: outcomes.Outcome | None = None
    final: bool = True  # False when RQ may retry the job, which then still needs its snapshot
    owned: bool = True  # False when recovery gave the job to another run before this one published
    result: DetectionResult | None = None  # an ok job's detections (what a shadow model is compared with)


@dataclass
class _Batch:
    """Taken jobs, admitted, with the snapshots of those to infer prepared for the detector."""

    items: list[_Taken]
    to_infer: list[_Taken]
    prepared: PreparedBatch | None  # None when nothing is to be inferred


class DeerWorker(BatchWorker):
    # RQ retries a lost Redis inside its dequeue loop, doubling the wait up to 60 s: after a 20 s outage
    # a worker idled 11 s with Redis back. Capped like the service loop's reconnect backoff.
    max_connection_wait_time = REDIS_MAX_BACKOFF

    def __init__(self, queues, *, detector: Detector, cameras: CameraBook, config: WorkerConfig,
                 metrics=None, overlap: bool = True, model_switcher=None, shadow=None, **kwargs) -> None:
        """overlap=False takes and prepares each batch only after the previous one ended (benchmarks
        compare the two). model_switcher (worker/serve/model_state.py) may replace self.detector, only
        between runs of batches. shadow (worker/serve/shadow.py) is offered each published ok snapshot and
        runs only after a run of batches, while no job waits."""
        kwargs.setdefault("serializer", SERIALIZER)
        # worker key TTL; RQ blocks on dequeue for worker_ttl - 15 s, so an idle worker's maintenance runs that often
        kwargs.setdefault("worker_ttl", config.worker_ttl)
        kwargs.setdefault("maintenance_interval", config.maintenance_interval)
        kwargs.setdefault("job_class", DeerJob)
        super().__init__(queues, **kwargs)
        self.detector, self.cameras, self.config, self.metrics = detector, cameras, config, metrics
        self.model_switcher, self.shadow = model_switcher, shadow
        self.orphan_suspects: dict[str, set[str]] = {}  # queue -> orphans seen by the last maintenance
        self.publish_once = PublishOnce(self.connection, channel=config.results_channel,
                                        stream=config.results_stream, stream_maxlen=config.results_stream_maxlen,
                                        marker_prefix=PUBLISHED_KEY_PREFIX)
        self.overlap, self.preparer = overlap, None  # the preparation thread lives as long as work() runs

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # RQ's SimpleWorker uses timeout + 60 s; ours is shorter so abandoned jobs come back sooner
        # (heartbeat_margin: seconds beyond the job timeout before a silent worker's job is abandoned).
        return int(job.timeout or self.config.job_timeout) + self.config.heartbeat_margin

    @property
    def model_info(self) -> ModelInfo:
        # Read per job, not kept: a model switch replaces self.detector between batches.
        spec = self.detector.spec
        return ModelInfo(spec.name, spec.version, spec.weights, self.detector.precision, spec.alert_classes)

    def work(self, *args, **kwargs) -> bool:
        # The service builds a new DeerWorker after each lost Redis: each loop's thread ends with it.
        self.preparer = ThreadPoolExecutor(1, thread_name_prefix="deer-take-ahead") if self.overlap else None
        try:
            return super().work(*args, **kwargs)
        finally:
            if self.preparer is not None:
                self.preparer.shutdown(wait=True)
                self.preparer = None

    # --- taking jobs -----------------------------------------------------------------------------
    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.model_switcher is None:
            self.run_batches(job, queue)
        else:
            with self.model_switcher.serving(self):  # a loaded model is swapped in before or after, never inside
                self.run_batches(job, queue)
        if self.shadow is not None:  # every result is published; the shadow runs while no job waits
            self.shadow.run_pending(self.job_waiting)

    def job_waiting(self) -> bool:
        """A job is queued (or a stop was asked): the shadow model yields to it."""
        if self.stop_was_requested():
            return True
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.llen(queue.key)
            return any(pipe.execute())

    def run_batches(self, job: Job, queue: Queue) -> None:
        """Run the batch this job starts, then, while each batch infers, take and prepare the next one."""
        batch: _Batch | None = self.prepare(self.take_batch((job, queue), ahead_wait=0))
        while batch is not None:
            ahead, done_keys = self.take_ahead(batch), []
            try:
                done_keys = self.run_batch(batch)
            finally:
                # Always joined: the thread's jobs are registered as started. If the batch in hand raised,
                # they wait out their heartbeat TTL and RQ's cleanup retries them.
                batch = None
                try:
                    batch = ahead.result() if ahead is not None else None
                finally:
                    self.end_batch(done_keys, idle=batch is None)

    def take_ahead(self, batch: _Batch) -> Future | None:
        """The next batch, taken and prepared on the preparation thread while `batch` infers; None when
        overlap is off or a stop was requested (the batch in hand is the last)."""
        if self.preparer is None or self.stop_was_requested():
            return None
        if self.model_switcher is not None and self.model_switcher.pending:
            return None  # a new model is loaded: end this run of batches so it is swapped in
        wait = self.batch_timeout(batch)  # the longest the next batch can wait for this one
        return self.preparer.submit(lambda: self.prepare(self.take_batch(None, ahead_wait=wait)))

    def take_batch(self, first: tuple[Job, Queue] | None, *, ahead_wait: int) -> list[_Taken]:
        """Up to max_batch jobs: `first` (RQ's blocking dequeue) and what is queued behind it, never
        waiting to fill a batch; each registered as started the moment it is taken."""
        taken = [self.take(*first, ahead_wait=ahead_wait)] if first is not None else []
        while len(taken) < self.detector.max_batch:
            more = self.dequeue_more()
            if more is None:
                break
            taken.append(self.take(*more, ahead_wait=ahead_wait))
        return taken

    def take(self, job: Job, queue: Queue, *, ahead_wait: int = 0) -> _Taken:
        """Register a dequeued job as started, reading its snapshot in the same round trip. A job taken
        ahead waits up to ahead_wait s for the batch in inference: its heartbeat TTL covers that too."""
        key = admission.prefetch_key(job)
        execution, prefetched = self.register_started(job, queue, self.get_heartbeat_ttl(job) + ahead_wait,
                                                      read_keys=[key] if key is not None else [])
        return _Taken(job, queue, execution, prefetched)

    def prepare(self, taken: list[_Taken]) -> _Batch | None:
        """Admit each job and decode and letterbox the snapshots of those to infer; None for no jobs."""
        if not taken:
            return None
        to_infer = [item for item in taken if self.admit(item)]
        return _Batch(taken, to_infer, self.prepare_snapshots([(i.data, i.settings) for i in to_infer]))

    def prepare_snapshots(self, pairs: list) -> PreparedBatch | None:
        return self.detector.prepare_batch(pairs) if pairs else None  # decode + letterbox

    def infer(self, prepared: PreparedBatch) -> list:
        return self.detector.run_prepared(prepared)

    def batch_timeout(self, batch: _Batch) -> int:
        return max((int(item.job.timeout or self.config.job_timeout) for item in batch.to_infer), default=0)

    def end_batch(self, done_keys: list[str], *, idle: bool = True) -> None:
        """One pipeline: drop finished jobs' snapshots, go idle when no batch follows (only then: RQ
        raises StopRequested at once on a stop signal to an idle worker), read queue depth for the gauge."""
        if not (done_keys or idle or self.metrics):
            return
        with self.connection.pipeline(transaction=False) as pipe:
            if done_keys:
                pipe.delete(*done_keys)
            if idle:
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
            requeue_orphans(self.connection, queue.name, self.orphan_suspects.get(queue.name, set()))
        self.orphan_suspects = {queue.name: orphans(self.connection, queue.name) for queue in self.queues}
        if self.metrics:
            for queue in self.queues:  # also while idle, so a backlog on a stuck pool still shows
                self.metrics.set_queue_depth(queue.name, queue.count)

    # --- the batch -------------------------------------------------------------------------------
    def run_batch(self, batch: _Batch) -> list[str]:
        """Infer, publish and finish the batch (its verdicts and snapshots are in); returns the snapshot
        keys no retry will need."""
        taken, to_infer = batch.items, batch.to_infer
        if self.metrics:
            self.metrics.job_started(len(taken))
        try:
            if to_infer:
                try:
                    with self.death_penalty_class(self.batch_timeout(batch), JobTimeoutException,
                                                  job_id=to_infer[0].job.id):
                        results = self.infer(batch.prepared)
                except Exception as exc:  # the whole batch failed (timeout, runtime error): each job fails with it
                    for item in to_infer:
                        self.fail(item, exc, retry=True)
                else:
                    for item, result in zip(to_infer, results):
                        if isinstance(result, Exception):  # bad input, or its part of the batch failed to infer
                            self.fail(item, result, retry=not isinstance(result, InputError))
                        else:
                            self.succeed(item, result)
            self.publish(taken)
            for item in taken:
                if item.owned:
                    self.finish(item)
                else:
                    self.forget(item.execution)
            if self.shadow is not None:
                self.offer_shadow(to_infer)
            return [i.snapshot.snapshot_key for i in taken if i.owned and i.final and i.snapshot and i.snapshot.snapshot_key]
        finally:
            if self.metrics:
                self.metrics.job_finished(len(taken))

    def offer_shadow(self, items: list[_Taken]) -> None:
        """Published ok snapshots, for the shadow to run later (it samples, holds and never raises)."""
        for item in items:
            if item.result is not None and item.owned and item.snapshot is not None:
                self.shadow.offer(job_id=item.job.id, camera_id=item.snapshot.camera_id,
                                  label=item.settings.label if item.settings else "other", data=item.data,
                                  settings=item.settings, primary=item.result.detections,
                                  primary_model=f"{self.detector.spec.name} ({self.detector.spec.version})",
                                  primary_alert_classes=self.detector.spec.alert_classes)

    def publish(self, taken: list[_Taken]) -> None:
        """Each job's result, once, by the run that still owns the job (one script call for the batch)."""
        publications = [Publication(
            item.job, item.execution, item.outcome.message["camera_id"], encode(item.outcome.message), item.final,
            job_lifetime(queued_ttl=self.config.queued_ttl, retries=self.config.retries,
                         job_timeout=int(item.job.timeout or self.config.job_timeout))) for item in taken]
        for item, verdict in zip(taken, self.publish_once(taken[0].queue, publications)):
            if verdict == NOT_OWNER:
                # Cut off past its heartbeat: recovery gave the job to another run, whose result counts.
                item.owned = False
                log.warning("job %s: result not published, the job is no longer this worker's (recovered "
                            "while this run was cut off); its new run publishes", item.job.id)
            elif verdict == ALREADY_PUBLISHED:
                log.warning("job %s: result not published again, an earlier run of it published one "
                            "(crashed before finishing it in RQ)", item.job.id)
            else:
                continue
            if self.metrics:
                self.metrics.count_refused_publish(verdict)

    def admit(self, item: _Taken) -> bool:
        """Decide the job's fate and read its snapshot; False when the job already has its outcome."""
        try:
            served = self.model_switcher.served_names if self.model_switcher else self.detector.spec.name
            verdict = admission.decide(item.job, config=self.config, model=served,
                                       cameras=self.cameras, started=item.started, latest_of=self.latest_marker,
                                       class_names=self.detector.class_names,
                                       preprocessing=self.detector.spec.preprocessing)
            item.snapshot, item.settings = verdict.snapshot, verdict.settings
            if isinstance(verdict, admission.Run):
                prefetched = item.prefetched
                item.data = snapshot_bytes(item.snapshot, max_snapshot_bytes=self.config.max_snapshot_bytes,
                                           snapshot_dirs=self.config.snapshot_dirs,
                                           fetch_key=lambda key: prefetched[key] if key in prefetched
                                           else self.connection.get(key))
                return True
        except DeerWorkerError as error:
            verdict = admission.Reject(item.snapshot, item.settings, error)
        except Exception as exc:  # noqa: BLE001 - e.g. a garbled latest marker: one job never stops the worker
            verdict = admission.Reject(item.snapshot, item.settings, admission.not_json(exc))
        if isinstance(verdict, admission.Expire):
            item.outcome = outcomes.expired(self.context(item), verdict.reason, verdict.age, verdict.max_age)
            if self.metrics:
                item.outcome.count(self.metrics)
        else:
            self.fail(item, verdict.error, retry=False)
        return False

    def latest_marker(self, camera_id: str) -> str | None:
        latest = self.connection.hget(LATEST_KEY, camera_id)
        return latest.decode() if latest else None

    # --- outcomes --------------------------------------------------------------------------------
    def context(self, item: _Taken) -> outcomes.JobContext:
        snapshot, enqueued = item.snapshot, item.job.enqueued_at
        return outcomes.JobContext(
            job_id=item.job.id, camera_id=snapshot.camera_id if snapshot else "",
            captured_at=snapshot.captured_at if snapshot else None, worker=self.name, model=self.model_info,
            queue_wait=max(0.0, item.started - enqueued.timestamp()) if enqueued is not None else 0.0)

    def succeed(self, item: _Taken, result: DetectionResult) -> None:
        context = self.context(item)
        item.outcome = outcomes.ok(context, result, item.settings)
        item.result = result
        if self.metrics:
            timings = result.timings
            stages = {"queue_wait": context.queue_wait, "decode": timings.decode, "preprocess": timings.preprocess,
                      "inference": timings.infer, "postprocess": timings.postprocess}
            self.metrics.observe_job(stages=stages, total=time.time() - item.started, batch_size=result.batch_size)
            item.outcome.count(self.metrics)  # jobs, zones and the detections the result reports

    def fail(self, item: _Taken, error: BaseException, *, retry: bool) -> None:
        """retry: the failure is not the input's (a batch-wide timeout or runtime error), so RQ may retry it."""
        if retry:
            item.final = not item.job.retries_left
        else:
            item.job.retries_left = 0  # bad input stays bad: retrying it only wastes a slot
        item.outcome = outcomes.failed(self.context(item), error)
        if self.metrics:
            item.outcome.count(self.metrics)
        log.warning("job %s failed: %s: %s", item.job.id, item.outcome.kind, error)

    def finish(self, item: _Taken) -> None:
        """RQ's bookkeeping for the outcome: failed registry with the error, or finished with the message."""
        error = item.outcome.error
        if error is not None:
            self.finalize_failure(item.job, item.queue, item.execution, (type(error), error, error.__traceback__))
        else:
            self.finalize_success(item.job, item.queue, item.execution, item.outcome.message)
