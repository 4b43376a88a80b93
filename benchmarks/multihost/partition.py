"""A worker host cut off while it holds started jobs (issue 19): do its jobs run elsewhere in time, and
does anyone see a second `ok` when it comes back?

    python benchmarks/multihost/partition.py [--rounds 10] [--out report.json]

Each round builds a lab (netlab.py): a Redis host and two worker hosts A and B with the same hostname
and pids (own UTS/PID namespaces) but their own machine ids. B starts and is frozen (SIGSTOP), A starts
and takes the round's jobs, each batch held `hold` s (a slow job); A's cable is pulled while it holds
them and B thaws. B's maintenance must fail A's jobs over (heartbeat TTL = job timeout + heartbeat
margin) and run them, within the documented bound; jobs older than max_age by then end `expired`. Then
A's cable goes back in: its late publish must be refused (one `ok` per job id on the results stream).
The test observes Redis over a unix socket, outside the lab's network, so cutting A never blinds it.
Prints (and writes with --out) a JSON report: release times (median, max), expired, duplicate oks, and
`failed_checks`, the rounds that broke one of the guarantees above; exit status 1 when there is one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from rq import Worker
from rq.registry import StartedJobRegistry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent / "reliability"), str(ROOT)]

import harness  # noqa: E402
from host_worker import BATCH_ENDED  # noqa: E402
import netlab  # noqa: E402
from worker.jobqueue.connections import SERIALIZER  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402
from worker.evaluation.host import host_line  # noqa: E402

DRIVER = HERE / "host_worker.py"
QUEUE = "deer-multihost"
STREAM = "deer:results:stream"
REDIS_PORT = 6379  # inside the lab's own Redis namespace
OBSERVER_SLACK = 0.5  # s: the stream is polled every 0.1 s; requeue and dequeue are a few round trips


@dataclass
class Settings:
    hold: float = 3.0  # s A spends on each batch: the cut lands inside it
    job_timeout: int = 6  # > hold, so A finishes and publishes (late) rather than timing out
    heartbeat_margin: int = 1
    maintenance_interval: int = 1
    worker_ttl: int = 16  # RQ's dequeue then blocks 1 s: an idle worker's maintenance runs every second
    max_age: float = 30.0
    stale_lead: float = 4.0  # the stale job is this much younger than max_age when enqueued
    reconnect_after: float = 2.0  # s after B's results before A's cable goes back in
    settle: float = 45.0  # s to wait for A's late publish attempt to end (TCP retransmission backoff)

    @property
    def dequeue_wait(self) -> int:
        """RQ's blocking dequeue timeout for this worker_ttl."""
        return max(1, self.worker_ttl - 15)

    @property
    def bound(self) -> float:
        """Documented: heartbeat TTL (job timeout + margin) + maintenance interval + RQ's dequeue wait."""
        return self.job_timeout + self.heartbeat_margin + self.maintenance_interval + self.dequeue_wait


def start_redis(lab: netlab.Lab, host: netlab.Host) -> redis.Redis:
    workdir = lab.workdir / "redis"
    workdir.mkdir(exist_ok=True)
    sock = workdir / "redis.sock"
    conf = workdir / "redis.conf"
    conf.write_text("\n".join([f"bind {host.address}", f"port {REDIS_PORT}", f"unixsocket {sock}",
                               "unixsocketperm 700", f"dir {workdir}", 'save ""', "appendonly no",
                               "protected-mode no", f"logfile {workdir / 'redis.log'}"]) + "\n")
    host.popen(["redis-server", str(conf)])
    conn = redis.Redis(unix_socket_path=str(sock), socket_timeout=5)
    harness.wait_for(lambda: sock.exists() and _pings(conn), 20, "the lab's redis-server")
    return conn


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except (redis.ConnectionError, OSError):
        return False


def worker_name_prefix(lab: netlab.Lab, host: netlab.Host) -> str:
    return f"deer-{lab.hostname.replace('.', '_')}-{host.machine_id[:8]}-w"


def wait_worker(conn: redis.Redis, prefix: str, timeout: float) -> str:
    def find():
        return next((w.name for w in Worker.all(connection=conn, serializer=SERIALIZER)
                     if w.name.startswith(prefix)), None)
    return harness.wait_for(find, timeout, f"a worker named {prefix}*")


def messages(conn: redis.Redis) -> list[tuple[float, dict]]:
    """Every result message on the stream with the time Redis added it (all of them, not the last per job)."""
    return [(int(entry_id.split(b"-")[0]) / 1000, json.loads(fields[b"result"]))
            for entry_id, fields in conn.xrange(STREAM)]


def _service_seconds(message: dict) -> float:
    """The worker's own time on a job (every measured stage but the queue wait), from its result."""
    return sum(v for k, v in message.get("timings_ms", {}).items() if k != "queue_wait") / 1e3


def one_round(workdir: Path, settings: Settings, subnet: int = 1, jobs: int = 2) -> dict:
    with netlab.Lab(workdir, subnet) as lab:
        redis_host, host_a, host_b = lab.add_host("redis"), lab.add_host("a"), lab.add_host("b")
        conn = start_redis(lab, redis_host)
        env = harness.worker_env(f"redis://{redis_host.address}:{REDIS_PORT}/0", queue=QUEUE, batch="4",
                                 job_timeout=settings.job_timeout, max_age=settings.max_age,
                                 heartbeat_margin=settings.heartbeat_margin,
                                 maintenance_interval=settings.maintenance_interval, worker_ttl=settings.worker_ttl,
                                 retries=2, zones="models/demo/zones.yaml")
        env.pop("PYTHONPATH", None)
        b = host_b.popen([sys.executable, str(DRIVER)], own_host=True, env=env, cwd=ROOT,
                         log=lab.workdir / "worker-b.log")
        a = host_a.popen([sys.executable, str(DRIVER), str(settings.hold)], own_host=True, env=env, cwd=ROOT,
                         log=lab.workdir / "worker-a.log")
        os.killpg(a.pid, signal.SIGSTOP)  # A waits until B is ready (both load a model: one at a time is faster)
        name_b = wait_worker(conn, worker_name_prefix(lab, host_b), 120)
        os.killpg(b.pid, signal.SIGSTOP)  # B idles frozen: A takes every job
        os.killpg(a.pid, signal.SIGCONT)
        name_a = wait_worker(conn, worker_name_prefix(lab, host_a), 120)
        harness.log(f"partition: B ({name_b}) frozen, A ({name_a}) ready")
        # The jobs must all be queued before A's next dequeue, so A takes them as one batch (and the ones
        # behind it, taken ahead) and holds every one at the cut: enqueued one by one under A's blocking
        # dequeue, the first can go alone and end before the rest are taken. A is frozen past its dequeue
        # wait (Redis answers its blocked call empty-handed, nobody else waits on the queue), then thaws.
        os.killpg(a.pid, signal.SIGSTOP)
        time.sleep(settings.dequeue_wait + 0.5)
        images = harness.sample_images()
        now = time.time()
        stale = enqueue_snapshot(conn, images[0], "cam0", queue=QUEUE, job_timeout=settings.job_timeout,
                                 captured_at=now - (settings.max_age - settings.stale_lead)).id
        fresh = [enqueue_snapshot(conn, images[(i + 1) % len(images)], f"cam{i + 1}", queue=QUEUE,
                                  job_timeout=settings.job_timeout).id for i in range(jobs - 1)]
        job_ids = [stale, *fresh]
        os.killpg(a.pid, signal.SIGCONT)
        started = StartedJobRegistry(QUEUE, connection=conn, serializer=SERIALIZER)
        harness.wait_for(lambda: set(job_ids) <= set(started.get_job_ids()), 30, "A holding every job")
        host_a.cut()
        cut_at = time.time()
        os.killpg(b.pid, signal.SIGCONT)

        def ended_by_b():
            got = {m["job_id"]: (t, m) for t, m in messages(conn) if m.get("worker") == name_b}
            return got if set(job_ids) <= set(got) else None
        by_b = harness.wait_for(ended_by_b, settings.bound + 60, "B ending A's jobs", interval=0.1)
        time.sleep(settings.reconnect_after)
        host_a.reconnect()
        reconnected_at = time.time()
        harness.log(f"partition: B ended A's jobs {max(t for t, _ in by_b.values()) - cut_at:.1f} s after the cut; "
                    "A reconnected")

        a_settled = True
        try:  # A's first batch ends once its publish went through or was refused
            harness.wait_for(lambda: BATCH_ENDED in (lab.workdir / "worker-a.log").read_text(errors="replace"),
                             settings.settle, "A's held batch to end", interval=0.2)
        except TimeoutError:
            a_settled = False
        time.sleep(0.5)
        seen = messages(conn)
        oks = {job_id: sum(1 for _, m in seen if m["job_id"] == job_id and m.get("status") == "ok")
               for job_id in job_ids}
        return {
            "bound_s": settings.bound,
            "released_s": {job_id: round(t - cut_at, 3) for job_id, (t, _) in by_b.items()},
            "b_service_s": max(_service_seconds(m) for _, m in by_b.values()),
            "outcome_by_b": {job_id: m.get("status") for job_id, (_, m) in by_b.items()},
            "expired_reason": {job_id: m.get("error") for job_id, (_, m) in by_b.items()
                               if m.get("status") == "expired"},
            "stale_job": stale,
            "fresh_jobs": fresh,
            "ok_per_job": oks,
            "late_from_a": [m["status"] for t, m in seen if m.get("worker") == name_a],
            "a_settled_after_reconnect": a_settled,
            "a_settle_s": round(time.time() - reconnected_at, 3),
            "workers": [name_a, name_b],
        }


def release_window(round_: dict, settings: Settings) -> tuple[float, float]:
    """When a fresh job of this round may end on B, in s after the cut: not before the heartbeat TTL less
    the part of the batch A held before the cut (B must not take a live host's jobs early), not after the
    documented bound plus B's own batch time, twice (the batch that may be running when the job comes
    back, and the job's own), and the observer's polling."""
    return (settings.job_timeout + settings.heartbeat_margin - settings.hold,
            settings.bound + 2 * round_["b_service_s"] + OBSERVER_SLACK)


def failed_checks(rounds: list[dict], settings: Settings) -> list[str]:
    """Every round's breaches of the guarantees: fresh jobs `ok` on B within the release window, the
    stale one `expired` too_old, one `ok` per job id, no `ok` from the cut-off host, A's batch ended."""
    failures = []
    for n, r in enumerate(rounds, 1):
        earliest, latest = release_window(r, settings)
        for job_id in r["fresh_jobs"]:
            outcome, released = r["outcome_by_b"].get(job_id), r["released_s"].get(job_id)
            if outcome != "ok":
                failures.append(f"round {n}: fresh job {job_id} ended {outcome} on the other host, not ok")
            elif not earliest <= released <= latest:
                failures.append(f"round {n}: fresh job {job_id} ended {released:.2f} s after the cut, outside "
                                f"{earliest:.2f}-{latest:.2f} s")
        stale = r["stale_job"]
        if r["outcome_by_b"].get(stale) != "expired" or (r["expired_reason"].get(stale) or {}).get("kind") != "too_old":
            failures.append(f"round {n}: the stale job ended {r['outcome_by_b'].get(stale)} "
                            f"({r['expired_reason'].get(stale)}), not expired too_old")
        twice = {job_id: k for job_id, k in r["ok_per_job"].items() if k > 1}
        if twice:
            failures.append(f"round {n}: more than one ok for a job id: {twice}")
        if "ok" in r["late_from_a"]:
            failures.append(f"round {n}: the cut-off host published an ok when it came back: {r['late_from_a']}")
        if not r["a_settled_after_reconnect"]:
            failures.append(f"round {n}: the cut-off host's held batch had not ended {r['a_settle_s']} s after "
                            "it reconnected")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="cut-offs to run (a fresh lab each)")
    parser.add_argument("--jobs", type=int, default=4, help="jobs A holds when cut off (one of them stale)")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    host = host_line()  # as the run starts: load and ISA decide the figures
    netlab.exit_on_sigterm()
    settings = Settings()
    rounds = []
    for n in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="deer-partition-") as tmp:
            rounds.append(one_round(Path(tmp), settings, subnet=1 + n % 200, jobs=args.jobs))
        harness.log(f"round {n + 1}: released {rounds[-1]['released_s']}")
    released = [t for r in rounds for job_id, t in r["released_s"].items() if r["outcome_by_b"][job_id] == "ok"]
    report = {
        "what": "a worker host cut off holding started jobs; its jobs finished elsewhere",
        "settings": vars(settings) | {"bound_s": settings.bound},
        "rounds": len(rounds),
        "released_ok_s": ({"median": statistics.median(released), "max": max(released), "n": len(released)}
                          if released else {"n": 0}),
        "expired_stale_jobs": sum(r["outcome_by_b"][r["stale_job"]] == "expired" for r in rounds),
        "duplicate_ok": sum(max(0, n - 1) for r in rounds for n in r["ok_per_job"].values()),
        "late_messages_from_cut_host": sum(len(r["late_from_a"]) for r in rounds),
        "failed_checks": failed_checks(rounds, settings),
        "detail": rounds,
    }
    text = json.dumps({"host": host, **report}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for failure in report["failed_checks"]:
        harness.log(f"FAILED: {failure}")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
