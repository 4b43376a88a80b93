"""Redis Sentinel and durable enqueue (issue 19).

The URL form connect() accepts; durable enqueue against a real primary and replica (confirmed, idempotent
by job id, unconfirmed without a replica); and the short version of benchmarks/multihost/failover.py:
a primary, one replica and three Sentinels on three lab boxes, a worker host and a producer host on
redis+sentinel://, the primary SIGKILLed under durable load; and its --fault cut: the primary's box cut
off with producers on it (a split brain), where plain enqueues the old primary acknowledged vanish and
durable ones are never acknowledged until a replica holds them; and rediss+sentinel:// against a TLS-only
Sentinel and Redis with a private CA (a job run through it; another CA refused in one line).
"""

from __future__ import annotations

import os
import subprocess
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
from conftest import GENEROUS_BOUND, tool  # noqa: E402
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
    primary = harness.RedisServer(tmp_path / "primary", conf=["repl-diskless-sync-delay 0"]).start(GENEROUS_BOUND)
    replica = harness.RedisServer(tmp_path / "replica", conf=[f"replicaof 127.0.0.1 {primary.port}"])
    try:
        yield primary, replica
    finally:
        replica.stop("sigkill", GENEROUS_BOUND)
        primary.stop("sigkill", GENEROUS_BOUND)


def _replica_online(conn: redis.Redis) -> bool:
    return conn.info("replication").get("slave0", {}).get("state") == "online"


def test_durable_enqueue_is_confirmed_by_a_replica_and_idempotent_by_job_id(primary_and_replica):
    primary, replica = primary_and_replica
    conn = connect(primary.url())
    # no replica yet: the job is on the primary only, reported unconfirmed with its id
    with pytest.raises(EnqueueUnconfirmedError) as caught:
        enqueue_snapshot(conn, SAMPLE, "cam0", job_id="j1", durable=True, wait_timeout_ms=100)
    assert caught.value.job_id == "j1" and caught.value.kind == "unconfirmed"
    replica.start(GENEROUS_BOUND)
    harness.wait_for(lambda: _replica_online(conn), GENEROUS_BOUND, "the replica")  # a local sync of two keys
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
_, needs_sentinel = tool("redis-server", "redis-server")  # Sentinel is `redis-server FILE --sentinel`
lab_needed = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@lab_needed
@needs_ip
@needs_sentinel
def test_a_sentinel_failover_under_durable_load_loses_no_acknowledged_job(tmp_path):
    import failover

    with netlab.Lab(tmp_path / "lab", subnet=23) as lab:
        cluster = failover.build(lab, workers=1)
        figures = failover.one_failover(cluster, modes=("durable",), rate=30, before=1.0, after=2.0)
    print(figures)
    assert figures["durable"]["acked"] > 0 and figures["durable"]["lost_acked"] == 0, figures
    # the worker found the new primary through the Sentinels and worked again: within the failover,
    # its reconnect backoff cap (twice: a try may just have failed), RQ's 1 s dequeue wait and a second
    # for the producer's next ticks and the batch
    (back,) = figures["worker_back_s"].values()
    assert back is not None and back <= figures["failover_s"] + 2 * REDIS_MAX_BACKOFF + 1 + 1, figures
    # failover.py's exit status (long_runs.py's verdict): this failover passes, a lost durable job or a
    # worker that never came back fails it
    assert failover.failed_checks([figures]) == []
    lost = {**figures, "durable": {**figures["durable"], "lost_acked": 1}}
    never = {**figures, "worker_back_s": dict.fromkeys(figures["worker_back_s"])}
    lost_failure, never_failure = failover.failed_checks([figures, lost, never])
    assert lost_failure.startswith("failover 2: 1 of") and "durable jobs lost" in lost_failure, lost_failure
    assert never_failure.startswith("failover 3: no result from the new primary"), never_failure


@lab_needed
@needs_ip
@needs_sentinel
def test_a_cut_off_primary_loses_acknowledged_plain_jobs_and_no_durable_one(tmp_path):
    import failover

    with netlab.Lab(tmp_path / "lab", subnet=24) as lab:
        cluster = failover.build(lab, workers=0)  # losses need no worker: seconds, not a model load
        figures = failover.one_failover(cluster, fault="cut", rate=20, before=0.2, after=0.0, cut_hold=0.3)
        # the old primary came back as the new one's replica (its own writes dropped by the resync)
        old = next(node for node in cluster.nodes if node.host.address != cluster.sentinel_primary())
        assert old.role() == "slave"
    print(figures)
    plain, durable = figures["plain"], figures["durable"]
    # the fault is the one durable enqueue is for: the cut-off primary acknowledged plain jobs that no
    # replica ever held, and they are gone from the new primary
    assert plain["acked"] > 0 and plain["lost_acked"] > 0, figures
    # durable: every acknowledged job survived; those the cut-off primary took were reported unconfirmed
    # (WAIT timed out) and retried with the same id, not acknowledged
    assert durable["acked"] > 0 and durable["lost_acked"] == 0 and durable["unconfirmed"] > 0, figures
    # failover.py's verdict: plain jobs lost to a cut-off primary are what this scenario shows, not a
    # failure; the same loss with the primary killed is one
    assert failover.failed_checks([figures]) == []
    (failure,) = failover.failed_checks([{**figures, "fault": "kill"}])
    assert failure.startswith("failover 1: ") and "plain jobs lost (kill)" in failure, failure


def _private_ca(workdir: Path) -> harness.TlsFiles:
    """A CA of our own and a server certificate it signed for 127.0.0.1 (Redis and Sentinel share it)."""
    workdir.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # EC: keys in ms, not seconds
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN=deer-test-ca-{workdir.name}")
    run("req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (workdir / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "san.ext")
    return harness.TlsFiles(ca=workdir / "ca.pem", cert=workdir / "server.pem", key=workdir / "server.key")


@pytest.fixture
def tls_sentinel(tmp_path):
    """A TLS-only primary (password) and a TLS-only Sentinel watching it over TLS: (tls files, Sentinel port)."""
    tls = _private_ca(tmp_path / "ca")
    primary = harness.RedisServer(tmp_path / "primary", password="tls-secret", tls=tls).start(GENEROUS_BOUND)
    port, workdir = harness.free_port(), tmp_path / "sentinel"
    workdir.mkdir()
    conf = workdir / "sentinel.conf"
    conf.write_text("\n".join([
        "bind 127.0.0.1", "port 0", f"tls-port {port}", f"tls-cert-file {tls.cert}", f"tls-key-file {tls.key}",
        f"tls-ca-cert-file {tls.ca}", "tls-auth-clients no", "tls-replication yes",  # TLS to the Redis nodes too
        f"dir {workdir}", "protected-mode no", f"logfile {workdir / 'sentinel.log'}",
        f"sentinel monitor deer 127.0.0.1 {primary.port} 1", "sentinel auth-pass deer tls-secret"]) + "\n")
    proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        sentinel = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(tls.ca), socket_timeout=2)
        harness.wait_for(lambda: _answers(sentinel), GENEROUS_BOUND, "the TLS Sentinel")
        yield tls, port
    finally:
        proc.kill()
        proc.wait(GENEROUS_BOUND)
        primary.stop("sigkill", GENEROUS_BOUND)


def _answers(sentinel: redis.Redis) -> bool:
    try:
        return sentinel.sentinel_master("deer")["flags"] == "master"  # it reached the primary over TLS
    except (redis.RedisError, OSError):
        return False


@needs_sentinel
def test_rediss_sentinel_url_runs_a_job_over_tls_and_a_wrong_ca_is_one_line(tls_sentinel, tmp_path, host_pace):
    tls, port = tls_sentinel
    url = f"rediss+sentinel://:tls-secret@127.0.0.1:{port}/deer/0?ssl_ca_certs={tls.ca}"
    conn = connect(url)
    job = enqueue_snapshot(conn, SAMPLE, "cam1", queue="deer-tls-sentinel")
    env = harness.worker_env(url, queue="deer-tls-sentinel", max_age=600)
    env.pop("PYTHONPATH", None)
    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.run([sys.executable, "-m", "worker", "run", "--burst"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, timeout=host_pace.bound(loads=1, batches=1))  # a load, a job
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert harness.account(conn, [job.id]).outcome[job.id] == ("ok", "none")
    # Another CA: the Sentinel is not trusted, and the reason says so
    wrong = url.replace(str(tls.ca), str(_private_ca(tmp_path / "other").ca))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        connect(wrong, timeout=GENEROUS_BOUND).ping()  # refused at the handshake, never timed out
    cli = subprocess.run([sys.executable, "-m", "worker", "enqueue", "--redis", wrong, "--camera", "cam2",
                          "--queue", "deer-tls-sentinel", str(ROOT / "models" / "demo" / "samples" /
                                                              "day_640x360_deer.jpg")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=GENEROUS_BOUND)  # starts, exits 2
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert "Traceback" not in cli.stderr and "rediss+sentinel://" in cli.stderr, cli.stderr
    assert Queue("deer-tls-sentinel", connection=conn, serializer=SERIALIZER).count == 0  # nothing enqueued
