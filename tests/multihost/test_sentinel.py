"""Redis Sentinel and durable enqueue (issue 19).

The URL form connect() accepts; durable enqueue against a real primary and replica (confirmed, idempotent
by job id, unconfirmed without a replica); and the short version of benchmarks/multihost/failover.py:
a primary, one replica and three Sentinels on three lab boxes, a worker host and a producer host on
redis+sentinel://, the primary SIGKILLed under durable load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import redis
from redis.sentinel import SentinelConnectionPool
from rq import Queue

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "multihost"))
sys.path.insert(0, str(ROOT / "benchmarks" / "reliability"))

import harness  # noqa: E402
from conftest import tool  # noqa: E402
import netlab  # noqa: E402
from worker.config import load_config  # noqa: E402
from worker.constants import REDIS_MAX_BACKOFF  # noqa: E402
from worker.errors import ConfigError, EnqueueUnconfirmedError  # noqa: E402
from worker.jobqueue.connections import SERIALIZER, connect, parse_sentinel_url  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402

SAMPLE = (ROOT / "models" / "demo" / "samples" / "day_640x360_deer.jpg").read_bytes()


def test_sentinel_url_names_sentinels_service_db_auth_and_tls():
    spec = parse_sentinel_url("redis+sentinel://deer:s%40cret@10.0.0.1:26379,box2,[::1]:26380/deer/3"
                              "?sentinel_password=sp")
    assert spec.sentinels == [("10.0.0.1", 26379), ("box2", 26379), ("::1", 26380)]
    assert (spec.service, spec.db, spec.username, spec.password, spec.tls) == ("deer", 3, "deer", "s@cret", False)
    assert spec.options == {"sentinel_password": "sp"}
    assert parse_sentinel_url("rediss+sentinel://a/deer").tls and parse_sentinel_url("rediss+sentinel://a/deer").db == 0
    for bad in ("redis+sentinel:///deer", "redis+sentinel://a:26379", "redis+sentinel://a/deer/0/x",
                "redis+sentinel://a/deer?colour=red"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def test_connect_and_the_config_take_a_sentinel_url():
    client = connect("redis+sentinel://127.0.0.1:1,127.0.0.2:1/deer/2")
    assert isinstance(client.connection_pool, SentinelConnectionPool)
    assert client.connection_pool.service_name == "deer"
    url = "redis+sentinel://u:pw@box1:26379,box2:26379/deer/0"
    assert load_config(None, env={"DEER_WORKER_REDIS_URL": url}).redis_url == url
    with pytest.raises(ConfigError, match="redis_url"):
        load_config(None, env={"DEER_WORKER_REDIS_URL": "sentinel://box1/deer"})


@pytest.fixture
def primary_and_replica(tmp_path):
    primary = harness.RedisServer(tmp_path / "primary", conf=["repl-diskless-sync-delay 0"]).start()
    replica = harness.RedisServer(tmp_path / "replica", conf=[f"replicaof 127.0.0.1 {primary.port}"])
    try:
        yield primary, replica
    finally:
        replica.stop("sigkill")
        primary.stop("sigkill")


def _replica_online(conn: redis.Redis) -> bool:
    return conn.info("replication").get("slave0", {}).get("state") == "online"


def test_durable_enqueue_is_confirmed_by_a_replica_and_idempotent_by_job_id(primary_and_replica):
    primary, replica = primary_and_replica
    conn = connect(primary.url())
    # no replica yet: the job is on the primary only, reported unconfirmed with its id
    with pytest.raises(EnqueueUnconfirmedError) as caught:
        enqueue_snapshot(conn, SAMPLE, "cam0", job_id="j1", durable=True, wait_timeout_ms=100)
    assert caught.value.job_id == "j1" and caught.value.kind == "unconfirmed"
    replica.start()
    harness.wait_for(lambda: _replica_online(conn), 30, "the replica")
    # the retry with the same id: confirmed now, no second job and no second queue entry
    job = enqueue_snapshot(conn, SAMPLE, "cam0", job_id="j1", durable=True)
    assert job.id == "j1"
    queue = Queue("deer-snapshots", connection=conn, serializer=SERIALIZER)
    assert queue.job_ids == ["j1"]
    # a fresh durable job is on the replica when enqueue returns
    enqueue_snapshot(conn, SAMPLE, "cam1", job_id="j2", durable=True)
    replica_queue = Queue("deer-snapshots", connection=replica.client(), serializer=SERIALIZER)
    assert replica_queue.job_ids == ["j1", "j2"]


_, needs_ip = tool("ip", "iproute2")
_, needs_sentinel = tool("redis-sentinel", "redis-sentinel")
lab_needed = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@lab_needed
@needs_ip
@needs_sentinel
def test_a_sentinel_failover_under_durable_load_loses_no_acknowledged_job(tmp_path):
    import failover

    with netlab.Lab(tmp_path / "lab", subnet=23) as lab:
        cluster = failover.build(lab, workers=1)
        figures = failover.one_failover(cluster, durable=True, rate=30, before=1.0, after=2.0)
    print(figures)
    assert figures["acked"] > 0 and figures["lost_acked"] == 0, figures
    # the worker found the new primary through the Sentinels and worked again: within the failover,
    # its reconnect backoff cap (twice: a try may just have failed), RQ's 1 s dequeue wait and a second
    # for the producer's next ticks and the batch
    (back,) = figures["worker_back_s"].values()
    assert back is not None and back <= figures["failover_s"] + 2 * REDIS_MAX_BACKOFF + 1 + 1, figures
