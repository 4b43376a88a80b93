"""The one seam to RQ: every use of RQ's private API or Redis key layout in the project, each with why.

Written against rq 3.0.0 (pinned in pyproject.toml to the minor range tests/jobqueue/test_rq_compat.py
passes on; that test exercises each name below against the installed RQ, so an upgrade that moves one
fails there by name). tests/jobqueue/test_rq_seam.py fails when any other module under worker/ touches
a private attribute of RQ or writes an `rq:` key.

What leans on RQ internals:
  worker_key                RQ's key layout of a worker hash
  BatchWorker.stop_was_requested   private _shutdown_requested_date
  BatchWorker.stop_at_first_check  private _stop_requested and _shutdown_requested_date
  BatchWorker.subscribe / subscribe_polling  RQ's subscribe re-done with a short poll (private
                                   _pubsub_exception_handler)
  BatchWorker._set_ip_address      private method, overridden
  BatchWorker.set_state            private _state
  BatchWorker.heartbeat            RQ's loop beats three times around every job (behaviour, not API)
  BatchWorker.handle_execution_ended  replaced without super (RQ's extra job heartbeat)
  BatchWorker.dequeue_more         private _ordered_queues
  BatchWorker.register_started     RQ 3.0's prepare_execution + prepare_job_execution, re-implemented
  BatchWorker.finalize_success / finalize_failure  private _finalize_success / _finalize_failure
  names_hooks                      private _success/_failure/_stopped_callback_name
  started_entries                  the started registry's member layout "<job id>:<execution id>"
  execution_owner                  Execution.fetch (the execution hash says which worker ran it)
  expire_started_entries           rewrites registry scores so RQ's cleanup abandons exactly these
  intermediate_job_ids / requeue_from_intermediate  RQ 3.0's intermediate list "<queue>:intermediate"
  PublishOnce                      a Lua script reading the started registry's key and member layout
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from rq import worker_registration
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.utils import now, parse_composite_key
from rq.worker import BaseWorker, SimpleWorker, WorkerStatus

log = logging.getLogger(__name__)

HEARTBEAT_REPEAT = 1.0  # s; a full worker heartbeat repeated sooner than this changes nothing
# s; how long the worker-channel thread waits for a command before it looks again whether to stop.
# RQ's 60 s, since redis-py's PubSubWorkerThread.stop() waits for the thread, was how long a stop
# (SIGTERM, the end of a burst) could hang in RQ's teardown after the unsubscribe.
PUBSUB_POLL = 0.5


def worker_key(name: str) -> str:
    """The Redis key of a worker's hash: a restarted loop deletes its own stale one, because RQ refuses
    to register a name whose key still exists."""
    return BaseWorker.redis_worker_namespace_prefix + name


def subscribe_polling(worker: BaseWorker, poll: float = PUBSUB_POLL) -> None:
    """RQ's BaseWorker.subscribe with the worker-channel thread polling every `poll` s (see
    BatchWorker.subscribe); for any RQ worker, so a benchmark can run RQ's own SimpleWorker without it."""
    worker.log.info("Worker %s: subscribing to channel %s", worker.name, worker.pubsub_channel_name)
    worker.pubsub = worker.connection.pubsub()
    worker.pubsub.subscribe(**{worker.pubsub_channel_name: worker.handle_payload})
    worker.pubsub_thread = worker.pubsub.run_in_thread(sleep_time=poll, daemon=True,
                                                       exception_handler=worker._pubsub_exception_handler)


class BatchWorker(SimpleWorker):
    """A SimpleWorker (no fork per job) that holds several started jobs at once, with RQ's per-job
    round trips folded. Subclasses implement execute_job with dequeue_more, register_started and
    finalize_success / finalize_failure."""

    heartbeat_repeat = HEARTBEAT_REPEAT

    def __init__(self, queues, **kwargs) -> None:
        super().__init__(queues, **kwargs)
        for queue in self.queues:  # RQ's registry maintenance fetches jobs with the queue's class
            queue.job_class = self.job_class
        self._full_heartbeat_at = float("-inf")  # monotonic time of the last heartbeat with the full worker TTL

    def stop_was_requested(self) -> bool:
        """True when work() ended on a stop signal; RQ's work() returns the same way when its loop broke
        on a Redis error, and only this private field tells the two apart."""
        return self._shutdown_requested_date is not None

    def subscribe(self) -> None:
        """RQ's worker channel (its shutdown and kill-horse commands) on a thread that polls every
        PUBSUB_POLL s. With RQ's 60 s poll, a thread that read the unsubscribe confirmation before stop()
        cleared its flag went back to wait 60 s for a subscription, and redis-py (8.2) joins it in stop():
        a worker took a minute to exit, past Compose's 10 s grace (seen on a busy host; every time when the
        main thread reaches stop() 0.3 s late)."""
        subscribe_polling(self)

    def stop_at_first_check(self) -> None:
        """A stop signal that came before work() installed RQ's handlers (the process took it): work()
        ends at its loop's first check, before any dequeue, as after RQ's own warm shutdown."""
        self._shutdown_requested_date = now()
        self._stop_requested = True

    def _set_ip_address(self, connection) -> None:
        # The embedded in-process server answers CLIENT INFO in a shape RQ cannot parse; the address
        # is only informational, so an unknown one must not stop the worker.
        try:
            super()._set_ip_address(connection)
        except Exception:  # noqa: BLE001
            self.ip_address = "unknown"

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is None and state == self._state:
            return  # RQ re-sends IDLE before every dequeue; the worker key already says so
        super().set_state(state, pipeline=pipeline)

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        # RQ sends three commands a beat and beats three times around every job (after it, before the
        # next dequeue, after the dequeue). One pipeline a beat, and a full beat repeated within
        # heartbeat_repeat is skipped: the key still has nearly all of its worker_ttl + 60 s to live.
        # A beat with another TTL (a job's, shorter) re-arms the next full one.
        if pipeline is not None:
            if timeout is not None:
                self._full_heartbeat_at = float("-inf")
            return super().heartbeat(timeout, pipeline=pipeline)
        if timeout is None and time.monotonic() - self._full_heartbeat_at < self.heartbeat_repeat:
            return None
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.exists(self.key)
            super().heartbeat(timeout, pipeline=pipe)
            registered = pipe.execute()[0]
        self._full_heartbeat_at = time.monotonic() if timeout is None else float("-inf")
        if not registered:
            self._register_again()
        return None

    def _register_again(self) -> None:
        """The worker's hash was gone at a heartbeat: Redis came back empty (a restart without persistence,
        a flush). RQ's dequeue loop retries a lost Redis and carries on unregistered, invisible to
        Worker.all (`rq info`, the gateway's /health); so write the registration again, as register_birth
        does (its hash, the queue's worker set, the TTL)."""
        log.warning("worker %s: its registration was gone from Redis (restarted empty?); registering again",
                    self.name)
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # RQ beats the job once more here to keep it alive while callbacks run; deer jobs have none,
        # and the success/failure pipeline that follows sets the job's final TTL.
        job.ended_at = now()

    def dequeue_more(self) -> tuple[Job, Queue] | None:
        """One more job without waiting (None when the queues are empty), in RQ's own queue order."""
        return self.queue_class.dequeue_any(self._ordered_queues, None, connection=self.connection,
                                            job_class=self.job_class, serializer=self.serializer,
                                            death_penalty_class=self.death_penalty_class)

    def register_started(self, job: Job, queue: Queue, ttl: int,
                         read_keys: Iterable[str] = ()) -> tuple[Execution, dict[str, bytes | None]]:
        """Register a dequeued job as started and GET `read_keys`, in one MULTI round trip.

        RQ 3.0's prepare_execution and prepare_job_execution (two pipelines) folded into one: from
        here a dead worker's job is in the StartedJobRegistry under its name (recovery retries it);
        before it, the job sits in RQ's intermediate list (recovery requeues orphans there).
        """
        read_keys = list(read_keys)
        with self.connection.pipeline() as pipe:
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            job.heartbeat(now(), ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)  # status STARTED, started_at, worker_name
            pipe.persist(job.key)
            if len(self.queues) == 1:  # RQ LMOVEs into the intermediate list only when it serves one queue
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            for key in read_keys:
                pipe.get(key)
            replies = pipe.execute()
        self.executions[execution.id] = execution
        return execution, dict(zip(read_keys, replies[len(replies) - len(read_keys):]))

    def finalize_success(self, job: Job, queue: Queue, execution: Execution, result) -> None:
        """RQ's own end of a job that returned `result` (status, result, registries, execution cleanup):
        only the private _finalize_success sets the job's result and status before handle_job_success."""
        self._finalize_success(job, queue, execution, result)

    def finalize_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: tuple) -> None:
        """RQ's own end of a failed job (failed registry or retry), through the private _finalize_failure."""
        self._finalize_failure(job, queue, execution, exc_info)

    def forget(self, execution: Execution) -> None:
        """Drop an execution this worker no longer owns (recovery gave its job to another run) without
        touching the job: RQ's bookkeeping of it is the new owner's."""
        self.executions.pop(execution.id, None)


# --- results published once -------------------------------------------------------------------
PUBLISHED, NOT_OWNER, ALREADY_PUBLISHED = "published", "not_owner", "already_published"

# One atomic step per batch on the Redis server: for each job, the proof that it is still this run's
# (its execution is in the queue's started registry: recovery removes it when it gives the job to
# another run) and that no run of the same job has published a final result (the marker, whose value
# is the job's created_at, so a caller re-using a job id for a new job is not refused); only then
# PUBLISH, XADD and, for a final outcome, set the marker. Refusals are returned, never raised.
_PUBLISH_ONCE_LUA = """
local channel, maxlen = ARGV[1], ARGV[2]
local verdicts = {}
for i = 1, (#ARGV - 2) / 7 do
  local at = 2 + (i - 1) * 7
  local member, job_id, camera_id, message, generation, final, ttl =
    ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6], ARGV[at + 7]
  local marker = KEYS[2 + i]
  if not redis.call('ZSCORE', KEYS[1], member) then
    verdicts[i] = '""" + NOT_OWNER + """'
  elseif redis.call('GET', marker) == generation then
    verdicts[i] = '""" + ALREADY_PUBLISHED + """'
  else
    redis.call('PUBLISH', channel, message)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'result', message, 'job_id', job_id,
               'camera_id', camera_id)
    if final == '1' then redis.call('SET', marker, generation, 'EX', ttl) end
    verdicts[i] = '""" + PUBLISHED + """'
  end
end
return verdicts
"""


@dataclass(frozen=True)
class Publication:
    job: Job
    execution: Execution
    camera_id: str
    message: str  # the encoded result message
    final: bool  # no RQ retry follows: a later run of this job must not publish again
    marker_ttl: int  # s; outlives every run the job can still have


class PublishOnce:
    """Results published at most once per job and only by the run that owns the job (see the script).
    The script is registered once; redis-py runs it by EVALSHA and loads it again after a server restart."""

    def __init__(self, connection: redis.Redis, *, channel: str, stream: str, stream_maxlen: int,
                 marker_prefix: str) -> None:
        self.script = connection.register_script(_PUBLISH_ONCE_LUA)
        self.channel, self.stream, self.stream_maxlen, self.marker_prefix = channel, stream, stream_maxlen, marker_prefix

    def __call__(self, queue: Queue, publications: list[Publication]) -> list[str]:
        """One verdict per publication: PUBLISHED, NOT_OWNER or ALREADY_PUBLISHED."""
        if not publications:
            return []
        keys = [queue.started_job_registry.key, self.stream] + [self.marker_prefix + p.job.id for p in publications]
        args: list = [self.channel, self.stream_maxlen]
        for p in publications:
            generation = p.job.created_at.isoformat() if p.job.created_at else ""
            args += [p.execution.composite_key, p.job.id, p.camera_id, p.message, generation, int(p.final),
                     p.marker_ttl]
        return [v.decode() if isinstance(v, bytes) else v for v in self.script(keys=keys, args=args)]


def names_hooks(job: Job) -> bool:
    """True if the job names callbacks or webhooks. RQ exposes a callback only by importing it
    (job.success_callback imports the dotted path); the stored names are private fields."""
    return bool(job._success_callback_name or job._failure_callback_name or job._stopped_callback_name
                or job.webhooks)


# --- recovery -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartedEntry:
    member: str  # the registry's sorted-set member
    job_id: str
    execution_id: str


def started_entries(registry: StartedJobRegistry) -> list[StartedEntry]:
    """The started registry's entries with their execution ids, read without RQ's cleanup: members are
    "<job id>:<execution id>" in RQ 3.0, and get_job_ids() drops the execution id (and cleans up)."""
    entries = []
    for raw in registry.connection.zrange(registry.key, 0, -1):
        member = raw.decode() if isinstance(raw, bytes) else raw
        job_id, execution_id = parse_composite_key(member)
        entries.append(StartedEntry(member, job_id, execution_id))
    return entries


def execution_owner(connection: redis.Redis, entry: StartedEntry) -> str:
    """The name of the worker that started this execution, "" once the execution hash has expired: only
    the execution says so, and it outlives the worker's own key when the worker is killed."""
    try:
        return Execution.fetch(entry.execution_id, entry.job_id, connection).worker_name
    except Exception:  # noqa: BLE001 - execution hash gone: its TTL already ran out, so it is abandoned
        return ""


def expire_started_entries(registry: StartedJobRegistry, entries: Iterable[StartedEntry]) -> None:
    """Abandon these started entries now: RQ has no public call for it, but its cleanup abandons the
    entries scored (expiring) before a timestamp, so they are scored 0 and cleaned up to 1; RQ then
    retries each job if it has retries left, else fails it with AbandonedJobError."""
    members = [entry.member for entry in entries]
    if members:
        registry.connection.zadd(registry.key, {member: 0 for member in members}, xx=True)
        registry.cleanup(timestamp=1)


def intermediate_job_ids(queue: Queue) -> list[str]:
    """Jobs in RQ 3.0's intermediate list of `queue`: a single-queue worker LMOVEs a job there when it
    takes it and removes it when it registers the job as started."""
    return [raw.decode() for raw in queue.connection.lrange(queue.intermediate_queue_key, 0, -1)]


def requeue_from_intermediate(queue: Queue, job_id: str) -> bool:
    """Move one job from the intermediate list back to the queue's front if it is still there; False when
    something took care of it meanwhile. RQ has no public call; its own cleanup fails such jobs later."""
    key = queue.intermediate_queue_key

    def move(pipe) -> bool:
        if pipe.lpos(key, job_id) is None:
            return False
        pipe.multi()
        pipe.lrem(key, 1, job_id)
        pipe.lpush(queue.key, job_id)
        return True

    return queue.connection.transaction(move, key, value_from_callable=True)
