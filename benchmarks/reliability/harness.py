"""Shared pieces of the reliability checks: a private redis-server, a worker pool, a steady producer,
job accounting, and per-process RSS / fd readings.

Every check runs against a redis-server of its own (free loopback port, data dir in a temp dir), not
the shared test Redis: other test runs flush db 13, which would look exactly like lost jobs.
Used by the scripts next to this file and, with short settings, by tests/reliability/.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from a clone without installing

from worker.jobqueue.connections import SERIALIZER  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402

SAMPLES = ROOT / "models" / "demo" / "samples"
DEMO_FP32 = ROOT / "models" / "demo" / "deer-yolo26n_openvino_model"
QUEUE = "deer-rel"
STREAM = "deer:results:stream"
TERMINAL = {"finished", "failed", "canceled", "stopped"}


def default_model() -> Path:
    return Path(os.environ.get("DEER_TEST_FP32_MODEL", DEMO_FP32))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- redis-server -----------------------------------------------------------------------------
@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class RedisServer:
    """A redis-server process of our own. `conf` lines are written to redis.conf in `workdir`."""

    def __init__(self, workdir: Path, *, port: int | None = None, conf: list[str] = (),
                 password: str | None = None, tls: TlsFiles | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password, self.tls = password, tls
        self.conf = list(conf)
        self.proc: subprocess.Popen | None = None

    def url(self, user: str | None = None, password: str | None = None, db: int = 0) -> str:
        auth = ""
        if password is not None:
            auth = f"{user or ''}:{password}@"
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/{db}?ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    @property
    def admin_url(self) -> str:
        return self.url(password=self.password) if self.password else self.url()

    def client(self, **kw) -> redis.Redis:
        return redis.Redis.from_url(self.admin_url, socket_connect_timeout=2, **kw)

    def _write_conf(self) -> Path:
        lines = [f"bind 127.0.0.1", f"dir {self.workdir}", "save \"\"", "daemonize no",
                 f"logfile {self.workdir / 'redis.log'}", "protected-mode no"]
        if self.tls:
            lines += ["port 0", f"tls-port {self.port}", f"tls-cert-file {self.tls.cert}",
                      f"tls-key-file {self.tls.key}", f"tls-ca-cert-file {self.tls.ca}", "tls-auth-clients no"]
        else:
            lines += [f"port {self.port}"]
        if self.password:
            lines.append(f"requirepass {self.password}")
        path = self.workdir / "redis.conf"
        path.write_text("\n".join(lines + self.conf) + "\n")
        return path

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.proc = subprocess.Popen(["redis-server", str(self._write_conf())], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> float:
        """Until PING answers (AOF loading answers LOADING first); returns the time.time() it did."""
        deadline = time.monotonic() + timeout
        client = self.client(socket_timeout=1)
        try:
            while True:
                try:
                    if client.ping():
                        return time.time()
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
                    pass
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                       f"{(self.workdir / 'redis.log').read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} not ready after {timeout} s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, how: str = "sigterm", timeout: float = 20.0) -> None:
        """sigterm (what systemd does) and shutdown both persist the AOF; sigkill is a crash."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if how == "shutdown":
            try:
                self.client(socket_timeout=5).shutdown()
            except (redis.ConnectionError, redis.ResponseError):
                pass
        else:
            self.proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
        self.proc.wait(timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop("sigkill")


# --- the worker pool --------------------------------------------------------------------------
def worker_env(redis_url: str, *, queue: str = QUEUE, model: Path | None = None, batch: str = "4",
               job_timeout: int = 10, max_age: float = 10.0, metrics_port: int = 0, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DEER_WORKER_REDIS_URL": redis_url, "DEER_WORKER_QUEUE": queue,
                "DEER_WORKER_MODEL": str(model or default_model()), "DEER_WORKER_BATCH": batch,
                "DEER_WORKER_JOB_TIMEOUT": str(job_timeout), "DEER_WORKER_MAX_AGE": str(max_age),
                "DEER_WORKER_METRICS_PORT": str(metrics_port), "DEER_WORKER_RESULTS_STREAM_MAXLEN": "10000000"})
    env.update({f"DEER_WORKER_{k.upper()}": str(v) for k, v in extra.items()})
    return env


class Pool:
    """`deer-worker run --workers N` as a process group of its own."""

    def __init__(self, env: dict[str, str], workers: int = 2, *, log_file: Path | None = None) -> None:
        self.env, self.workers = env, workers
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None

    def start(self) -> Pool:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--workers",
                                      str(self.workers)], cwd=ROOT, env=self.env, stdout=out, stderr=out,
                                     start_new_session=True)
        return self

    def children(self) -> list[int]:
        return children_of(self.proc.pid) if self.workers > 1 else [self.proc.pid]

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def __enter__(self) -> Pool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)", which may contain spaces
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(entry))
    return sorted(kids)


def registered_workers(conn: redis.Redis, queue: str = QUEUE) -> dict[int, str]:
    """pid -> RQ worker name of the deer workers registered on `queue`."""
    names = [n.decode().removeprefix("rq:worker:") for n in conn.smembers(f"rq:workers:{queue}")]
    return {int(n.rsplit(".", 1)[1]): n for n in names if n.startswith("deer-")}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- producing --------------------------------------------------------------------------------
def sample_images(names=("day_640x360_deer.jpg", "night_640x360_empty.jpg", "day_640x360_empty.jpg",
                         "night_640x360_deer.jpg")) -> list[bytes]:
    return [(SAMPLES / n).read_bytes() for n in names]


class Producer(threading.Thread):
    """Enqueues at `rate` jobs/s until stopped. A job counts as acknowledged once enqueue returned:
    Redis replied to the MULTI/EXEC that stored it. Enqueue errors (Redis down) are counted and
    retried at the next tick; those snapshots were never acknowledged."""

    def __init__(self, redis_url: str, rate: float, *, images: list[bytes] | None = None, queue: str = QUEUE,
                 cameras: int = 8, job_timeout: int = 10, retries: int = 2, queued_ttl: int = 3600) -> None:
        super().__init__(daemon=True, name="producer")
        self.conn = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=2)
        self.rate, self.queue, self.cameras = rate, queue, cameras
        self.images = images or sample_images()
        self.kw = {"job_timeout": job_timeout, "retries": retries, "queued_ttl": queued_ttl}
        self.acked: list[tuple[str, float]] = []  # (job id, time.time() of the acknowledgement)
        self.uncertain: list[str] = []  # the enqueue raised: stored or not, Redis will tell afterwards
        self.errors = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        period, n = 1.0 / self.rate, 0
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            job_id = uuid.uuid4().hex
            try:
                enqueue_snapshot(self.conn, self.images[n % len(self.images)], f"cam{n % self.cameras}",
                                 queue=self.queue, job_id=job_id, **self.kw)
                self.acked.append((job_id, time.time()))
                n += 1
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
                self.uncertain.append(job_id)
                self.errors += 1
                time.sleep(0.05)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop_event.wait(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # fell behind (outage): do not burst to catch up

    def stop(self) -> list[str]:
        """Stop; returns every job id Redis holds (acknowledged, or stored although the reply was lost)."""
        self._stop_event.set()
        self.join(10)
        stored = [job_id for job_id in self.uncertain if self.conn.exists(f"rq:job:{job_id}")]
        return [job_id for job_id, _ in self.acked] + stored


# --- accounting -------------------------------------------------------------------------------
def result_messages(conn: redis.Redis, stream: str = STREAM) -> dict[str, dict]:
    """job id -> its last result message (a retried job may have an earlier `failed` one)."""
    messages, last = {}, "-"
    while True:
        chunk = conn.xrange(stream, min=last, max="+", count=5000)
        if last != "-":
            chunk = chunk[1:]
        if not chunk:
            return messages
        for entry_id, fields in chunk:
            message = json.loads(fields[b"result"])
            messages[message["job_id"]] = message
        last = chunk[-1][0]


@dataclass
class Accounting:
    outcome: dict[str, tuple[str, str]] = field(default_factory=dict)  # job id -> (state, kind)

    def counts(self) -> Counter:
        return Counter(state for state, _ in self.outcome.values())

    def kinds(self) -> Counter:
        return Counter(f"{state}:{kind}" for state, kind in self.outcome.values())

    def ids(self, state: str) -> list[str]:
        return [job_id for job_id, (s, _) in self.outcome.items() if s == state]

    @property
    def unaccounted(self) -> list[str]:
        """Lost (hash missing) or not ended (started, queued, ...)."""
        return [job_id for job_id, (s, _) in self.outcome.items() if s not in ("ok", "expired", "failed")]


def _failure_reason(conn: redis.Redis, job_id: str) -> str:
    from rq.job import Job

    try:
        result = Job.fetch(job_id, connection=conn, serializer=SERIALIZER).latest_result()
    except Exception as exc:  # noqa: BLE001 - this is a report, not the system under test
        return f"unreadable:{type(exc).__name__}"
    text = (result.exc_string or "") if result else ""
    if "AbandonedJobError" in text:
        return "abandoned"
    if "stuck in intermediate queue" in text:
        return "stuck_in_intermediate_queue"
    return text.strip().splitlines()[-1][:60] if text.strip() else "no_reason"


def account(conn: redis.Redis, job_ids: list[str], stream: str = STREAM) -> Accounting:
    """Each job: ok / expired / failed (with its error kind) from RQ's status and the result message;
    started / queued / ... when it has not ended; missing when its hash is gone (lost)."""
    messages = result_messages(conn, stream)
    statuses = []
    for start in range(0, len(job_ids), 2000):
        with conn.pipeline(transaction=False) as pipe:
            for job_id in job_ids[start:start + 2000]:
                pipe.hget(f"rq:job:{job_id}", "status")
            statuses += pipe.execute()
    acc = Accounting()
    for job_id, raw in zip(job_ids, statuses):
        status = raw.decode() if raw else "missing"
        message = messages.get(job_id)
        if status == "finished" and message:
            acc.outcome[job_id] = (message["status"], (message.get("error") or {}).get("kind", "none"))
        elif status == "failed":
            kind = (message.get("error") or {}).get("kind") if message and message["status"] == "failed" else None
            acc.outcome[job_id] = ("failed", kind or _failure_reason(conn, job_id))
        else:
            acc.outcome[job_id] = (status if status != "finished" else "finished_without_result", "")
    return acc


def unaccounted_failures(report: dict) -> list[str]:
    """The first check of every script's verdict (failed_checks): its report's `unaccounted` jobs (see
    Accounting), as a failure line, or none."""
    lost = report["unaccounted"]
    if not lost:
        return []
    return [f"{len(lost)} jobs not ended ok/expired/failed with a reason: {dict(list(lost.items())[:5])}"]


def all_ended(conn: redis.Redis, job_ids: list[str]) -> bool:
    with conn.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = pipe.execute()
    return all(s is not None and s.decode() in TERMINAL for s in statuses)


def wait_all_ended(conn: redis.Redis, job_ids: list[str], timeout: float) -> bool:
    """True when every job ended; False on timeout (the accounting then shows which did not)."""
    try:
        wait_for(lambda: all_ended(conn, job_ids), timeout, "all jobs to end", interval=0.5)
        return True
    except TimeoutError:
        return False


# --- processes --------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * (len(ordered) - 1)))))
    return ordered[index]


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode("ascii")}


def seeded(seed: int | None) -> random.Random:
    return random.Random(seed if seed is not None else int(time.time()))
