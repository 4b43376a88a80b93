"""Redis Sentinel failover under load (issue 19): a primary, one replica and three Sentinels on three lab
boxes, a producer host and worker hosts, all talking redis+sentinel://; the primary is SIGKILLed.

    python benchmarks/multihost/failover.py [--failovers 10] [--workers 2] [--rate 40] [--out report.json]

Each failover is measured twice over: with plain enqueues and with durable ones (enqueue_snapshot
durable=True: Redis WAIT for the replica). Per failover: the failover time (primary killed -> a Sentinel
names the replica primary), each worker's time back to work (kill -> its first result from the new
primary), and acknowledged jobs lost (the producer was told "enqueued", the new primary has no such
job). The killed node comes back as a replica before the next round, so rounds alternate the boxes.
The test observes every Redis over a unix socket, outside the lab's network.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq.job import Job

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(HERE.parent / "reliability"), str(ROOT)]

import harness  # noqa: E402
import netlab  # noqa: E402
from partition import messages, wait_worker, worker_name_prefix  # noqa: E402

WORKER = HERE / "host_worker.py"
PRODUCER = HERE / "producer_driver.py"
QUEUE = "deer-failover"
SERVICE = "deer"
REDIS_PORT, SENTINEL_PORT = 6379, 26379
DOWN_AFTER_MS = 1000  # Sentinel's down-after-milliseconds: how long a silent primary is given


@dataclass
class Node:
    host: netlab.Host
    workdir: Path
    replica_of: str | None
    proc: subprocess.Popen | None = None

    @property
    def sock(self) -> Path:
        return self.workdir / "redis.sock"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.sock), socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [f"bind {self.host.address}", f"port {REDIS_PORT}", f"unixsocket {self.sock}", "unixsocketperm 700",
                 f"dir {self.workdir}", 'save ""', "appendonly no", "protected-mode no",
                 f"logfile {self.workdir / 'redis.log'}", "repl-diskless-sync-delay 0"]
        if self.replica_of:
            lines.append(f"replicaof {self.replica_of} {REDIS_PORT}")
        (self.workdir / "redis.conf").write_text("\n".join(lines) + "\n")
        self.proc = self.host.popen(["redis-server", str(self.workdir / "redis.conf")])
        harness.wait_for(lambda: self.sock.exists() and _ping(self.client()), 20, f"redis on {self.host.name}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def role(self) -> str | None:
        try:
            return self.client().role()[0].decode()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return None


def replica_online(primary: Node) -> bool:
    """The primary's replica has synced and streams (WAIT can count it)."""
    try:
        return primary.client().info("replication").get("slave0", {}).get("state") == "online"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _ping(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False


def start_sentinel(host: netlab.Host, workdir: Path, primary: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "sentinel.sock"
    conf = workdir / "sentinel.conf"  # Sentinel rewrites its own file: one per Sentinel
    conf.write_text("\n".join([
        f"bind {host.address}", f"port {SENTINEL_PORT}", f"unixsocket {sock}", "unixsocketperm 700",
        f"dir {workdir}", "protected-mode no", f"logfile {workdir / 'sentinel.log'}",
        f"sentinel monitor {SERVICE} {primary} {REDIS_PORT} 2",
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SERVICE} 10000", f"sentinel parallel-syncs {SERVICE} 1"]) + "\n")
    host.popen(["redis-sentinel", str(conf)])
    harness.wait_for(lambda: sock.exists() and _ping(redis.Redis(unix_socket_path=str(sock))), 20,
                     f"sentinel on {host.name}")
    return sock


@dataclass
class Cluster:
    lab: netlab.Lab
    nodes: list[Node]
    sentinel_socks: list[Path]
    url: str
    workers: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    app: netlab.Host | None = None  # the producer host

    def primary(self) -> Node:
        return next(node for node in self.nodes if node.role() == "master")

    def sentinel_primary(self) -> str:
        reply = redis.Redis(unix_socket_path=str(self.sentinel_socks[-1])).sentinel_get_master_addr_by_name(SERVICE)
        return reply[0] if isinstance(reply[0], str) else reply[0].decode()


def build(lab: netlab.Lab, workers: int) -> Cluster:
    boxes = [lab.add_host(f"box{i}") for i in (1, 2, 3)]
    app = lab.add_host("app")
    worker_hosts = [lab.add_host(f"w{i}") for i in range(workers)]
    primary = Node(boxes[0], lab.workdir / "redis1", None)
    replica = Node(boxes[1], lab.workdir / "redis2", boxes[0].address)
    primary.start()
    replica.start()
    harness.wait_for(lambda: replica_online(primary), 30, "the replica")
    socks = [start_sentinel(box, lab.workdir / f"sentinel{i}", boxes[0].address) for i, box in enumerate(boxes, 1)]
    url = f"redis+sentinel://{','.join(f'{b.address}:{SENTINEL_PORT}' for b in boxes)}/{SERVICE}/0"
    cluster = Cluster(lab, [primary, replica], socks, url)
    sentinel0 = redis.Redis(unix_socket_path=str(socks[0]))
    harness.wait_for(lambda: int(sentinel0.sentinel_master(SERVICE)["num-other-sentinels"]) == 2, 30,
                     "the Sentinels to find each other")
    env = harness.worker_env(url, queue=QUEUE, batch="4", job_timeout=10, max_age=60.0, maintenance_interval=1,
                             worker_ttl=16, heartbeat_margin=2, zones="models/demo/zones.yaml")
    env.pop("PYTHONPATH", None)
    conn = primary.client()
    for host in worker_hosts:
        proc = host.popen([sys.executable, str(WORKER)], own_host=True, env=env, cwd=ROOT,
                          log=lab.workdir / f"worker-{host.name}.log")
        cluster.workers.append((wait_worker(conn, worker_name_prefix(lab, host), 180), proc))
    cluster.app = app
    return cluster


def one_failover(cluster: Cluster, *, durable: bool, rate: float, before: float, after: float) -> dict:
    """Load, kill the primary, load on; returns the figures of this failover."""
    old = cluster.primary()
    new = next(node for node in cluster.nodes if node is not old)
    producer = cluster.app.popen([sys.executable, str(PRODUCER), cluster.url, QUEUE, str(rate),
                                  "durable" if durable else "plain"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=None, cwd=ROOT)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in producer.stdout), daemon=True)
    reader.start()
    harness.wait_for(lambda: any("acked" in e for e in events), 60, "the producer's first acknowledged job")
    time.sleep(before)
    old_address = old.host.address
    killed_at = time.time()
    old.kill()
    promoted = harness.wait_for(lambda: new.role() == "master" and cluster.sentinel_primary() != old_address
                                and time.time(), 60, "the Sentinels to promote the replica", interval=0.05)
    # The killed box comes back (systemd restarts it) as the new primary's replica: until then a durable
    # enqueue has no replica to confirm it and reports unconfirmed
    old.replica_of = new.host.address
    old.start()
    harness.wait_for(lambda: replica_online(new), 60, "the old primary to rejoin as a replica")
    rejoined = time.time()
    time.sleep(after)
    producer.stdin.close()
    producer.wait(30)
    reader.join(10)
    conn = new.client()
    acked = [e["acked"] for e in events if "acked" in e]
    lost = [job_id for job_id in acked if not Job.exists(job_id, connection=conn)]
    seen = messages(conn)
    back = {}
    for name, _ in cluster.workers:
        times = [t for t, m in seen if m.get("worker") == name and t > killed_at]
        back[name] = round(min(times) - killed_at, 3) if times else None
    return {"durable": durable, "failover_s": round(promoted - killed_at, 3), "worker_back_s": back,
            "replica_back_s": round(rejoined - killed_at, 3),
            "acked": len(acked), "lost_acked": len(lost), "lost_ids": lost[:20],
            "unconfirmed": sum("unconfirmed" in e for e in events),
            "errors": sum("error" in e for e in events)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--failovers", type=int, default=10, help="failovers per mode (plain, durable)")
    parser.add_argument("--workers", type=int, default=2, help="worker hosts (one worker process each)")
    parser.add_argument("--rate", type=float, default=40.0, help="jobs/s the producer enqueues")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    netlab.exit_on_sigterm()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="deer-failover-") as tmp, netlab.Lab(Path(tmp), subnet=21) as lab:
        cluster = build(lab, args.workers)
        for n in range(2 * args.failovers):
            rounds.append(one_failover(cluster, durable=n % 2 == 1, rate=args.rate, before=3.0, after=6.0))
            harness.log(f"failover {n + 1}: {rounds[-1]}")
    report = {"what": "Redis Sentinel failover under load: primary SIGKILLed", "rate": args.rate,
              "workers": args.workers, "failovers": len(rounds)}
    for mode, durable in (("plain", False), ("durable", True)):
        mine = [r for r in rounds if r["durable"] == durable]
        back = [t for r in mine for t in r["worker_back_s"].values() if t is not None]
        report[mode] = {
            "failovers": len(mine),
            "failover_s": {"median": statistics.median(r["failover_s"] for r in mine),
                           "max": max(r["failover_s"] for r in mine)},
            "worker_back_s": {"median": statistics.median(back) if back else None, "max": max(back) if back else None,
                              "never": sum(t is None for r in mine for t in r["worker_back_s"].values())},
            "acked": sum(r["acked"] for r in mine), "lost_acked": sum(r["lost_acked"] for r in mine),
            "unconfirmed_then_retried": sum(r["unconfirmed"] for r in mine),
        }
    report["detail"] = rounds
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
