"""Redis locked down: password, a minimal ACL user, TLS with a private CA. Each test starts its own
redis-server and runs a real worker and producer through it.

The ACL below is the least a deer deployment needs (worked out by running worker, producer, pool
recovery and maintenance against it; ACL LOG must stay empty). README "Reliability and security
checks" gives the same line for redis.conf.

Deadlines that include starting a worker (import, model load) or serving jobs are host_pace.bound() of
the loads and batches in them, measured on this host in this run; the rest (a process that starts and
exits, one local request) GENEROUS_BOUND. Job TTLs do not race the loads: the queued TTL of the jobs that
wait through two of them is derived from the same pace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
import redis

from conftest import FP32_MODEL, GENEROUS_BOUND, ROOT, SAMPLES, sample
from crash_driver import go, launch
from relsupport import harness
from worker.constants import DEFAULT_QUEUED_TTL
from worker.constants import DEFAULT_MAINTENANCE_INTERVAL as MAINTENANCE_INTERVAL  # the workers here run the default
from worker.jobqueue.producer import enqueue_snapshot

QUEUE = "deer-secure"
# Keys rq:* and deer:*, channels rq:* (worker commands) and deer:* (results); these commands only.
ACL_COMMANDS = ("ping client|setname client|info info multi exec watch unwatch "
                "get set del exists expire persist "
                "hget hgetall hset hincrby hincrbyfloat "
                "lpush rpush lmove blmove lrem llen lrange lpos "
                "sadd srem smembers "
                "zadd zrem zrange zrangebyscore zremrangebyscore "
                "xadd publish subscribe unsubscribe "
                "evalsha script|load zscore").split()  # publish-once: one Lua script (loaded on NOSCRIPT) reading ZSCORE
WORKER_ACL = ("on >{password} resetkeys ~rq:* ~deer:* resetchannels &rq:* &deer:* -@all "
              + " ".join("+" + c for c in ACL_COMMANDS))


def _worker(url: str, tmp_path, *args: str, metrics_port: int = 0) -> subprocess.Popen:
    env = harness.worker_env(url, queue=QUEUE, max_age=600, metrics_port=metrics_port)
    log = open(tmp_path / f"worker-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "INFO", "run", *args], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _get(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=GENEROUS_BOUND).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def acl_redis(tmp_path):
    server = harness.RedisServer(tmp_path / "redis", password="admin-secret", conf=[
        f"user deer {WORKER_ACL.format(password='deer-secret')}",
        "user intruder on >intruder-secret resetkeys ~other:* resetchannels &other:* +@all",
    ]).start(GENEROUS_BOUND)
    yield server
    server.stop("sigkill", GENEROUS_BOUND)


def _denials(admin: redis.Redis) -> list:
    return [(e["username"], e["reason"], e["object"]) for e in admin.acl_log()]


def test_minimal_acl_user_runs_worker_producer_and_recovery(acl_redis, tmp_path, host_pace):
    url = acl_redis.url("deer", "deer-secret")
    admin = acl_redis.client()
    conn = redis.Redis.from_url(url)
    data = sample("day_640x360_deer.jpg")
    # Queued from before the crash driver loads its model until a second worker has loaded its own and the
    # orphan sweep (two maintenance passes) has run: the queued TTL covers that at this host's pace.
    ttl = int(max(DEFAULT_QUEUED_TTL, 3 * MAINTENANCE_INTERVAL + 20 * host_pace.load_s))
    jobs = [enqueue_snapshot(conn, data, f"cam{i}", queue=QUEUE, queued_ttl=ttl) for i in range(8)]
    jobs.append(enqueue_snapshot(conn, data, "cam0", queue=QUEUE, queued_ttl=ttl,
                                 captured_at=time.time() - 3600))  # expires
    from rq import Queue

    from worker.jobqueue.connections import SERIALIZER
    from worker.constants import JOB_FUNCTION
    jobs.append(Queue(QUEUE, connection=conn, serializer=SERIALIZER).enqueue(JOB_FUNCTION, {"v": 1}))  # fails
    # A worker dies after taking jobs (the 2nd of a batch moved to RQ's intermediate list, not yet
    # registered); the pool's recovery runs with the same user.
    crashed = launch(url, QUEUE, FP32_MODEL, "after_drain_1")
    stderr = go(crashed, timeout=host_pace.bound(batches=1))  # loaded: it dies in its first batch
    assert crashed.returncode == -9, stderr[-2000:]
    assert _denials(admin) == []
    port = harness.free_port()
    worker = _worker(url, tmp_path, metrics_port=port)
    try:
        # a worker start (a load), three batches, and the orphan sweep (two maintenance passes)
        assert harness.wait_all_ended(admin, [j.id for j in jobs],
                                      3 * MAINTENANCE_INTERVAL + host_pace.bound(loads=1, batches=3))
        assert _get(port, "/healthz") == 200
        # the CLI producer, waiting for its result on the results channel
        wait = host_pace.bound(batches=1)  # one job for a worker that is serving
        out = subprocess.run([sys.executable, "-m", "worker", "enqueue", str(SAMPLES / "day_640x360_deer.jpg"),
                              "--camera", "cam9", "--redis", url, "--queue", QUEUE, "--wait", str(int(wait))],
                             cwd=ROOT, capture_output=True, text=True, timeout=wait + GENEROUS_BOUND)
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.strip().splitlines()[-1])["status"] == "ok"
    finally:
        worker.terminate()
        assert worker.wait(host_pace.bound(batches=1)) == 0  # the batch in hand, then exit
    acc = harness.account(admin, [j.id for j in jobs])  # the check reads more than a worker may
    assert acc.kinds() == {"ok:none": 8, "expired:too_old": 1, "failed:bad_payload": 1}, acc.kinds()
    assert _denials(admin) == []  # nothing the deployment does was refused


def test_a_user_without_access_and_a_wrong_password_are_refused(acl_redis, tmp_path, host_pace):
    data = sample("day_640x360_deer.jpg")
    intruder = redis.Redis.from_url(acl_redis.url("intruder", "intruder-secret"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        enqueue_snapshot(intruder, data, "cam1", queue=QUEUE)
    for url in (acl_redis.url("deer", "wrong"), acl_redis.url()):  # wrong password, none at all
        with pytest.raises(redis.exceptions.AuthenticationError):
            enqueue_snapshot(redis.Redis.from_url(url), data, "cam1", queue=QUEUE)
    # The deer user cannot reach other keys or run admin commands.
    deer = redis.Redis.from_url(acl_redis.url("deer", "deer-secret"))
    for command in (lambda: deer.get("other:secret"), lambda: deer.keys("*"), lambda: deer.config_get("*"),
                    lambda: deer.flushall(), lambda: deer.eval("return 1", 0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            command()
    # Workers: valid credentials without key access stop at once; a wrong password retries, never ready.
    refused = _worker(acl_redis.url("intruder", "intruder-secret"), tmp_path)
    assert refused.wait(host_pace.bound(loads=1)) != 0  # a worker start, refused
    port = harness.free_port()
    locked_out = _worker(acl_redis.url("deer", "wrong"), tmp_path, metrics_port=port)
    try:
        harness.wait_for(lambda: _get(port, "/healthz") == 503, host_pace.bound(loads=1), "the health server to answer")
        assert _get(port, "/readyz") == 503
    finally:
        locked_out.terminate()
        locked_out.wait(host_pace.bound(loads=1))  # may be mid-start
    assert acl_redis.client().dbsize() == 0  # nothing was written


def _make_ca_and_server_cert(tmp_path) -> harness.TlsFiles:
    def run(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=deer-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "san.ext")
    return harness.TlsFiles(ca=tmp_path / "ca.pem", cert=tmp_path / "server.pem", key=tmp_path / "server.key")


def test_tls_with_a_private_ca(tmp_path, host_pace):
    tls = _make_ca_and_server_cert(tmp_path)
    server = harness.RedisServer(tmp_path / "redis", password="tls-secret", tls=tls).start(GENEROUS_BOUND)
    try:
        url = server.url(password="tls-secret")  # rediss://:tls-secret@127.0.0.1:PORT/0?ssl_ca_certs=.../ca.pem
        assert url.startswith("rediss://") and "ssl_ca_certs=" in url
        conn = redis.Redis.from_url(url)
        job = enqueue_snapshot(conn, sample("day_640x360_deer.jpg"), "cam1", queue=QUEUE)
        worker = _worker(url, tmp_path, "--burst")
        assert worker.wait(host_pace.bound(loads=1, batches=1)) == 0  # a burst worker: a load, one job
        assert harness.account(conn, [job.id]).outcome[job.id] == ("ok", "none")
        # Without the CA the server is not trusted; plain redis:// gets no answer from a TLS port.
        untrusted = f"rediss://:tls-secret@127.0.0.1:{server.port}/0"
        with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
            redis.Redis.from_url(untrusted, socket_connect_timeout=GENEROUS_BOUND).ping()  # refused, not timed out
        with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
            redis.Redis.from_url(f"redis://:tls-secret@127.0.0.1:{server.port}/0", socket_connect_timeout=2,
                                 socket_timeout=2).ping()
    finally:
        server.stop("sigkill", GENEROUS_BOUND)
