"""The RQ contract: each private name or key layout worker/jobqueue/rq_compat.py relies on, exercised
against the installed RQ on the real Redis (db 9, flushed per test). An RQ release that moves one fails
the test named after it; pyproject.toml pins RQ to the minor range this file passes on."""

from __future__ import annotations

import signal
import time

import pytest
from rq import Callback, Queue
from rq.exceptions import StopRequested
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.webhook import Webhook
from rq.worker import SimpleWorker

from conftest import stop_handlers_kept
from private_db import private_db
from worker.constants import JOB_FUNCTION
from worker.jobqueue import rq_compat
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.consumer import DeerWorker
from worker.jobqueue.contract import DeerJob
from worker.jobqueue.rq_compat import BatchWorker

DB = 9
QUEUE = "rq-compat"
PAYLOAD = {"v": 1, "camera_id": "cam1", "snapshot": {"key": "deer:snap:x"}}
# What our worker classes define that RQ's SimpleWorker also has: each a deliberate override.
OVERRIDES = {"BatchWorker": {"__init__", "_set_ip_address", "set_state", "heartbeat", "handle_execution_ended",
                             "subscribe"},
             "DeerWorker": {"__init__", "max_connection_wait_time", "get_heartbeat_ttl", "execute_job",
                            "run_maintenance_tasks", "work"}}


@pytest.fixture
def conn():
    with private_db(DB) as connection:
        yield connection


@pytest.fixture
def queue(conn):
    return Queue(QUEUE, connection=conn, serializer=SERIALIZER)


def _worker(queue, **kw) -> BatchWorker:
    return BatchWorker([queue], connection=queue.connection, serializer=SERIALIZER, job_class=DeerJob,
                       name=f"compat-{time.monotonic_ns()}", **kw)


def _enqueue(queue, **kw):
    return queue.enqueue(JOB_FUNCTION, PAYLOAD, **kw)


def _taken(queue):
    """A job enqueued, dequeued and registered the way the consumer does it."""
    _enqueue(queue)
    worker = _worker(queue)
    worker.register_birth()
    job, got = worker.dequeue_more()
    execution, _ = worker.register_started(job, got, 30)
    return worker, job, execution


def test_worker_key_is_the_key_rq_registers_a_worker_under(queue):
    worker = _worker(queue)
    worker.register_birth()
    assert rq_compat.worker_key(worker.name) == worker.key
    assert queue.connection.exists(rq_compat.worker_key(worker.name))


def test_stop_was_requested_follows_rqs_shutdown_date(queue):
    worker = _worker(queue)
    worker.register_birth()
    assert not worker.stop_was_requested()
    with stop_handlers_kept(), pytest.raises(StopRequested):  # RQ's handler, as work() installs it, on an idle
        worker.request_stop(signal.SIGTERM, None)                  # worker (it re-arms them for a cold stop)
    assert worker.stop_was_requested()


def test_stop_at_first_check_ends_work_before_any_dequeue(queue):
    """A stop the process took before work() installed RQ's handlers: work() returns without taking the
    queued job, and stop_was_requested() says it stopped on request (so the service does not restart it)."""
    job = _enqueue(queue)
    worker = _worker(queue)
    worker.stop_at_first_check()
    with stop_handlers_kept():  # work() installs RQ's handlers
        assert worker.work(burst=True) is False
    assert worker.stop_was_requested()
    assert job.id in queue.job_ids  # still queued: nothing was taken


def test_a_stop_is_not_held_by_the_worker_channel_thread(queue):
    """RQ's teardown unsubscribes, then stops the worker-channel thread, which redis-py joins. A main
    thread that gets there late (a busy host) found the thread back in a 60 s wait: a minute per stop.
    Ours polls every PUBSUB_POLL s, so the teardown waits at most about that."""
    def burst(late: float) -> float:
        worker = _worker(queue)
        real_unsubscribe = worker.unsubscribe

        def unsubscribe_late():
            real_stop = worker.pubsub_thread.stop

            def stop(*args, **kwargs):
                time.sleep(late)  # the thread reads the unsubscribe confirmation and loops first
                return real_stop(*args, **kwargs)

            worker.pubsub_thread.stop = stop
            real_unsubscribe()

        worker.unsubscribe = unsubscribe_late
        started = time.monotonic()
        with stop_handlers_kept():
            worker.work(burst=True)
        assert worker.pubsub_thread.sleep_time == rq_compat.PUBSUB_POLL and not worker.pubsub_thread.is_alive()
        return time.monotonic() - started

    on_time = burst(0.0)
    assert burst(0.3) < on_time + 0.3 + 20 * rq_compat.PUBSUB_POLL  # RQ's own poll: 60 s more


def test_set_ip_address_override_survives_an_unparsable_client_info(queue, monkeypatch):
    monkeypatch.setattr(queue.connection, "client_info", lambda: {})  # the embedded server's answer
    assert _worker(queue).ip_address == "unknown"  # RQ calls _set_ip_address from __init__


def test_set_state_skips_resending_rqs_private_state(queue):
    worker = _worker(queue)
    worker.register_birth()
    worker.set_state("busy")
    assert worker._state == "busy" and worker.get_state() == "busy"
    queue.connection.hset(worker.key, "state", "marker")
    worker.set_state("busy")  # unchanged: nothing sent
    assert queue.connection.hget(worker.key, "state") == b"marker"
    worker.set_state("idle")
    assert queue.connection.hget(worker.key, "state") == b"idle"


def test_heartbeat_is_folded_and_a_repeat_skipped_without_running_short(queue):
    worker = _worker(queue, worker_ttl=30)
    worker.heartbeat_repeat = 3600  # no clock in this test: a repeat always falls inside the window
    worker.register_birth()
    worker.heartbeat()
    assert queue.connection.ttl(worker.key) > 30 + 50  # RQ's full beat: worker_ttl + 60
    queue.connection.expire(worker.key, 40)
    worker.heartbeat()  # skipped
    assert queue.connection.ttl(worker.key) <= 40
    with queue.connection.pipeline() as pipe:  # a job's shorter beat re-arms the next full one
        worker.heartbeat(15, pipeline=pipe)
        pipe.execute()
    assert queue.connection.ttl(worker.key) <= 15
    worker.heartbeat()
    assert queue.connection.ttl(worker.key) > 30 + 50


def test_a_worker_whose_registration_vanished_registers_again_at_its_next_heartbeat(queue):
    """Redis back empty (a restart without persistence): RQ's dequeue loop would go on unregistered, unseen
    by Worker.all (`rq info`, the gateway's /health, which then answers 503 with a live worker)."""
    worker = _worker(queue, worker_ttl=30)
    worker.register_birth()
    assert [w.name for w in SimpleWorker.all(queue=queue)] == [worker.name]
    queue.connection.flushdb()
    worker._full_heartbeat_at = float("-inf")  # the beat after RQ's reconnect wait (>= 1 s) is a full one
    worker.heartbeat()
    assert [w.name for w in SimpleWorker.all(queue=queue)] == [worker.name]
    assert queue.connection.hget(worker.key, "birth") and queue.connection.ttl(worker.key) > 30 + 50


def test_dequeue_more_takes_through_rqs_intermediate_list_without_waiting(queue):
    job = _enqueue(queue)
    worker = _worker(queue)
    taken, got = worker.dequeue_more()
    assert taken.id == job.id and got.name == QUEUE and isinstance(taken, DeerJob)
    assert rq_compat.intermediate_job_ids(queue) == [job.id]
    started = time.monotonic()
    assert worker.dequeue_more() is None and time.monotonic() - started < 1  # empty: no blocking wait


def test_register_started_is_rqs_prepare_execution_in_one_round_trip(queue):
    conn = queue.connection
    conn.set("deer:snap:x", b"jpeg")
    job = _enqueue(queue)
    worker = _worker(queue)
    worker.register_birth()
    taken, got = worker.dequeue_more()
    execution, read = worker.register_started(taken, got, 30, read_keys=["deer:snap:x"])
    assert read == {"deer:snap:x": b"jpeg"}
    job.refresh()
    assert job.get_status() == JobStatus.STARTED and job.worker_name == worker.name
    assert conn.ttl(job.key) == -1  # persisted while it runs
    assert rq_compat.intermediate_job_ids(queue) == []
    registry = StartedJobRegistry(QUEUE, connection=conn, serializer=SERIALIZER)
    assert rq_compat.started_entries(registry) == [
        rq_compat.StartedEntry(f"{job.id}:{execution.id}", job.id, execution.id)]
    assert worker.executions[execution.id] is execution and worker.get_state() == "busy"
    assert rq_compat.execution_owner(conn, rq_compat.started_entries(registry)[0]) == worker.name


def test_finalize_success_saves_the_result_and_clears_the_execution(queue):
    worker, job, execution = _taken(queue)
    worker.finalize_success(job, queue, execution, {"status": "ok"})
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == {"status": "ok"}
    assert job.ended_at is not None  # handle_execution_ended, replaced, still marks the end
    assert job.id in FinishedJobRegistry(QUEUE, connection=queue.connection, serializer=SERIALIZER).get_job_ids()
    assert StartedJobRegistry(QUEUE, connection=queue.connection).count == 0
    assert queue.connection.scard(worker.executions_key) == 0


def test_finalize_failure_moves_the_job_to_the_failed_registry(queue):
    worker, job, execution = _taken(queue)
    job.retries_left = 0
    try:
        raise ValueError("bad input")
    except ValueError as error:
        worker.finalize_failure(job, queue, execution, (ValueError, error, error.__traceback__))
    job.refresh()
    assert job.get_status() == JobStatus.FAILED and "bad input" in job.latest_result().exc_string
    assert job.id in FailedJobRegistry(QUEUE, connection=queue.connection, serializer=SERIALIZER).get_job_ids()
    assert StartedJobRegistry(QUEUE, connection=queue.connection).count == 0


def test_names_hooks_reads_rqs_private_callback_names(queue):
    plain = DeerJob.fetch(_enqueue(queue).id, connection=queue.connection, serializer=SERIALIZER)
    assert not rq_compat.names_hooks(plain)
    for hooks in ({"on_success": Callback("os.getcwd")}, {"on_failure": Callback("os.getcwd")},
                  {"on_stopped": Callback("os.getcwd")}, {"webhooks": [Webhook("http://127.0.0.1:9/", "finished")]}):
        fetched = DeerJob.fetch(_enqueue(queue, **hooks).id, connection=queue.connection, serializer=SERIALIZER)
        assert rq_compat.names_hooks(fetched), hooks


def test_execution_owner_is_empty_once_the_execution_hash_is_gone(queue):
    worker, job, execution = _taken(queue)
    registry = StartedJobRegistry(QUEUE, connection=queue.connection, serializer=SERIALIZER)
    [entry] = rq_compat.started_entries(registry)
    queue.connection.delete(execution.key)
    assert rq_compat.execution_owner(queue.connection, entry) == ""


@pytest.mark.parametrize("retries, expected", [(1, JobStatus.QUEUED), (0, JobStatus.FAILED)])
def test_expire_started_entries_abandons_exactly_those_through_rqs_cleanup(queue, retries, expected):
    from rq import Retry

    conn = queue.connection
    kept = _enqueue(queue)
    gone = _enqueue(queue, retry=Retry(max=retries) if retries else None)
    worker = _worker(queue)
    worker.register_birth()
    executions = {}
    for _ in range(2):
        job, got = worker.dequeue_more()
        executions[job.id], _ = worker.register_started(job, got, 30)
    registry = StartedJobRegistry(QUEUE, connection=conn, serializer=SERIALIZER, job_class=DeerJob)
    rq_compat.expire_started_entries(registry, [e for e in rq_compat.started_entries(registry) if e.job_id == gone.id])
    assert [e.job_id for e in rq_compat.started_entries(registry)] == [kept.id]
    gone.refresh()
    assert gone.get_status() == expected
    kept.refresh()
    assert kept.get_status() == JobStatus.STARTED


def test_requeue_from_intermediate_puts_an_orphan_back_once(queue):
    job = _enqueue(queue)
    _worker(queue).dequeue_more()  # taken, never registered: an orphan if its worker died now
    assert rq_compat.requeue_from_intermediate(queue, job.id) is True
    assert queue.job_ids == [job.id] and rq_compat.intermediate_job_ids(queue) == []
    assert rq_compat.requeue_from_intermediate(queue, job.id) is False


@pytest.mark.parametrize("cls", [BatchWorker, DeerWorker], ids=lambda cls: cls.__name__)
def test_our_worker_classes_override_only_what_they_mean_to(cls, queue):
    """A new RQ attribute with the name of one of our methods would be silently replaced by ours."""
    rq_names = set(dir(SimpleWorker)) | set(vars(SimpleWorker([queue], connection=queue.connection)))
    assert set(vars(cls)) & rq_names - {"__module__", "__doc__", "__qualname__", "__firstlineno__",
                                        "__static_attributes__"} == OVERRIDES[cls.__name__]
