"""The several-hosts settings reach the RQ worker: heartbeat_margin sets a started job's heartbeat TTL,
maintenance_interval and worker_ttl RQ's sweep and blocking dequeue; bad values are refused by name."""

from __future__ import annotations

import pytest
from rq import Queue

from conftest import DEMO
from worker.cameras import load_camera_book
from worker.config import load_config
from worker.errors import ConfigError
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.consumer import DeerWorker


def test_the_settings_reach_the_rq_worker(redis_conn, fp32_detector):
    config = load_config(None, env={"DEER_WORKER_HEARTBEAT_MARGIN": "3", "DEER_WORKER_MAINTENANCE_INTERVAL": "2",
                                    "DEER_WORKER_WORKER_TTL": "17", "DEER_WORKER_JOB_TIMEOUT": "5"})
    queue = Queue("deer-settings", connection=redis_conn, serializer=SERIALIZER)
    worker = DeerWorker([queue], connection=redis_conn, detector=fp32_detector,
                        cameras=load_camera_book(DEMO / "zones.yaml"), config=config)
    assert (worker.maintenance_interval, worker.worker_ttl, worker.dequeue_timeout) == (2, 17, 2)
    job = queue.enqueue("worker.tasks.detect_snapshot", "{}", job_timeout=7)
    assert worker.get_heartbeat_ttl(job) == 7 + 3


@pytest.mark.parametrize("key, value", [("heartbeat_margin", "0"), ("maintenance_interval", "0"),
                                        ("worker_ttl", "15"), ("host_id", "box-1"), ("host_id", "x" * 33)])
def test_bad_values_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(None, env={f"DEER_WORKER_{key.upper()}": value})
