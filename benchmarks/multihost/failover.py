"""Redis Sentinel failover under load (issue 19): a primary, one replica and three Sentinels on three lab
boxes, producers and worker hosts, all talking redis+sentinel://; the primary fails in one of two ways.

    python benchmarks/multihost/failover.py [--fault kill|cut] [--failovers 10] [--workers 2] [--rate 10]
                                            [--out report.json]

--fault kill: the primary is SIGKILLed (and restarted as the new primary's replica, as systemd would).
The producers run on a host of their own.

--fault cut: the primary's box has its cable pulled (netlab: its switch port down) while the primary
keeps running, and the producers run ON that box: a split brain. They still reach the old primary
(and their own box's Sentinel, which still names it) and keep enqueueing to it; the other two
Sentinels promote the replica; `cut_hold` s later the cable goes back in, the Sentinels demote the old
primary and it resyncs from the new one: every write it took after the cut vanishes.

Every failover runs two producers at once (--rate jobs/s each): plain enqueues and durable ones
(enqueue_snapshot durable=True: Redis WAIT for the replica; an EnqueueUnconfirmedError is retried with
the same job id until confirmed, and counted as unconfirmed, never as lost). Per failover: the
failover time (fault -> a Sentinel on the majority side names the replica primary), each worker's time
back to work (fault -> its first result from the new primary), and per mode the acknowledged jobs lost
(the producer was told "enqueued", the new primary has no such job once the old one rejoined). Roles
alternate between the two Redis boxes from round to round. The script observes every Redis over a unix
socket, outside the lab's network, so a cut never blinds it.

The report's `failed_checks` lists the failovers that broke a guarantee: a worker never back, a mode
that acknowledged nothing, a durable job lost, a plain job lost to a killed primary (a cut-off one loses
plain jobs: that is what the scenario shows, not a failure); exit status 1 when there is one.
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
from worker.evaluation.host import host_line  # noqa: E402

WORKER = HERE / "host_worker.py"
PRODUCER = HERE / "producer_driver.py"
QUEUE = "deer-failover"
SERVICE = "deer"
REDIS_PORT, SENTINEL_PORT = 6379, 26379
SENTINEL_COMMAND = ["redis-server"]  # `redis-server FILE --sentinel` is redis-sentinel (a symlink to it); no extra package
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
    host.popen(SENTINEL_COMMAND + [str(conf), "--sentinel"])
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


FAULTS = ("kill", "cut")
MODES = ("plain", "durable")


@dataclass
class Producer:
    """producer_driver.py on a lab host, its JSON events collected as they come."""
    mode: str
    proc: subprocess.Popen
    events: list[dict] = field(default_factory=list)

    @classmethod
    def start(cls, host: netlab.Host, url: str, mode: str, rate: float) -> Producer:
        proc = host.popen([sys.executable, str(PRODUCER), url, QUEUE, str(rate), mode], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=None, cwd=ROOT)
        producer = cls(mode, proc)
        threading.Thread(target=lambda: producer.events.extend(json.loads(line) for line in proc.stdout),
                         daemon=True).start()
        return producer

    def acked(self) -> list[str]:
        return [e["acked"] for e in list(self.events) if "acked" in e]

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)
        harness.wait_for(lambda: any(e.get("done") for e in self.events), 10, f"the {self.mode} producer's end")


def one_failover(cluster: Cluster, *, rate: float, before: float, after: float, fault: str = "kill",
                 modes: tuple[str, ...] = MODES, cut_hold: float = 2.0) -> dict:
    """Load (one producer per mode), fail the primary (`fault`), load on until the old primary is the new
    one's replica again, `after` s more; returns the figures of this failover."""
    old = cluster.primary()
    new = next(node for node in cluster.nodes if node is not old)
    # cut: the producers sit on the primary's own box, the side of the cut that still reaches it
    producer_host = old.host if fault == "cut" else cluster.app
    producers = [Producer.start(producer_host, cluster.url, mode, rate) for mode in modes]
    for producer in producers:
        harness.wait_for(producer.acked, 60, f"the {producer.mode} producer's first acknowledged job")
    time.sleep(before)
    old_address = old.host.address
    fault_at = time.time()
    if fault == "cut":
        old.host.cut()
    else:
        old.kill()
    promoted = harness.wait_for(lambda: new.role() == "master" and cluster.sentinel_primary() != old_address
                                and time.time(), 60, "the Sentinels to promote the replica", interval=0.05)
    reconnected = demoted = None
    if fault == "cut":
        time.sleep(cut_hold)  # the old primary, alone with its producers, acknowledges what no replica holds
        old.host.reconnect()
        reconnected = time.time()
        demoted = harness.wait_for(lambda: old.role() == "slave" and time.time(), 60,
                                   "the Sentinels to demote the old primary", interval=0.05)
    else:
        # The killed box comes back (systemd restarts it) as the new primary's replica: until then a
        # durable enqueue has no replica to confirm it and reports unconfirmed
        old.replica_of = new.host.address
        old.start()
    harness.wait_for(lambda: replica_online(new), 60, "the old primary to rejoin as a replica")
    rejoined = time.time()
    time.sleep(after)
    for producer in producers:
        producer.stop()
    conn = new.client()
    seen = messages(conn)
    back = {}
    for name, _ in cluster.workers:
        times = [t for t, m in seen if m.get("worker") == name and t > fault_at]
        back[name] = round(min(times) - fault_at, 3) if times else None
    figures = {"fault": fault, "failover_s": round(promoted - fault_at, 3), "worker_back_s": back,
               "replica_back_s": round(rejoined - fault_at, 3)}
    if fault == "cut":
        figures["cut_s"] = round(reconnected - fault_at, 3)
        figures["demoted_after_reconnect_s"] = round(demoted - reconnected, 3)
    for producer in producers:
        acked = producer.acked()
        lost = [job_id for job_id in acked if not Job.exists(job_id, connection=conn)]
        figures[producer.mode] = {
            "acked": len(acked), "lost_acked": len(lost), "lost_ids": lost[:10],
            "unconfirmed": sum("unconfirmed" in e for e in producer.events),
            "errors": sum("error" in e for e in producer.events)}
    return figures


def failed_checks(rounds: list[dict]) -> list[str]:
    """Every failover's breaches of the guarantees the docstring names."""
    failures = []
    for n, r in enumerate(rounds, 1):
        never = sorted(name for name, back in r["worker_back_s"].items() if back is None)
        if never:
            failures.append(f"failover {n}: no result from the new primary by {never}")
        for mode in MODES:
            if mode not in r:
                continue
            if r[mode]["acked"] == 0:
                failures.append(f"failover {n}: the {mode} producer had nothing acknowledged")
            if r[mode]["lost_acked"] and (mode == "durable" or r["fault"] == "kill"):
                failures.append(f"failover {n}: {r[mode]['lost_acked']} of {r[mode]['acked']} acknowledged "
                                f"{mode} jobs lost ({r['fault']}): {r[mode]['lost_ids']}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", choices=FAULTS, default="kill",
                        help="kill: SIGKILL the primary; cut: pull its box's cable, producers on that box")
    parser.add_argument("--failovers", type=int, default=10,
                        help="failovers (each measures plain and durable enqueues at once)")
    parser.add_argument("--workers", type=int, default=2, help="worker hosts (one worker process each)")
    parser.add_argument("--rate", type=float, default=10.0, help="jobs/s each producer (plain, durable) enqueues")
    parser.add_argument("--cut-hold", type=float, default=2.0,
                        help="--fault cut: s the cable stays out after the replica's promotion")
    parser.add_argument("--out", help="also write the JSON report to this file")
    args = parser.parse_args()
    host = host_line()  # as the run starts: load and ISA decide the figures
    netlab.exit_on_sigterm()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="deer-failover-") as tmp, netlab.Lab(Path(tmp), subnet=21) as lab:
        cluster = build(lab, args.workers)
        for n in range(args.failovers):
            rounds.append(one_failover(cluster, fault=args.fault, rate=args.rate, before=3.0, after=6.0,
                                       cut_hold=args.cut_hold))
            harness.log(f"failover {n + 1}: {rounds[-1]}")
    what = {"kill": "primary SIGKILLed, producers on a host of their own",
            "cut": "primary's box cut off (cable pulled), producers on that box (split brain)"}[args.fault]
    back = [t for r in rounds for t in r["worker_back_s"].values() if t is not None]
    report = {"what": f"Redis Sentinel failover under load: {what}", "fault": args.fault,
              "rate_per_producer": args.rate, "workers": args.workers, "failovers": len(rounds),
              "failover_s": {"median": statistics.median(r["failover_s"] for r in rounds),
                             "max": max(r["failover_s"] for r in rounds)},
              "worker_back_s": {"median": statistics.median(back) if back else None,
                                "max": max(back) if back else None,
                                "never": sum(t is None for r in rounds for t in r["worker_back_s"].values())}}
    if args.fault == "cut":
        report["cut_s"] = {"median": statistics.median(r["cut_s"] for r in rounds),
                           "max": max(r["cut_s"] for r in rounds)}
        report["demoted_after_reconnect_s"] = {"median": statistics.median(r["demoted_after_reconnect_s"]
                                                                            for r in rounds),
                                               "max": max(r["demoted_after_reconnect_s"] for r in rounds)}
    for mode in MODES:
        report[mode] = {"acked": sum(r[mode]["acked"] for r in rounds),
                        "lost_acked": sum(r[mode]["lost_acked"] for r in rounds),
                        "failovers_with_a_loss": sum(r[mode]["lost_acked"] > 0 for r in rounds),
                        "unconfirmed_then_retried": sum(r[mode]["unconfirmed"] for r in rounds),
                        "errors_not_acknowledged": sum(r[mode]["errors"] for r in rounds)}
    report["failed_checks"] = failed_checks(rounds)
    report["detail"] = rounds
    text = json.dumps({"host": host, **report}, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for failure in report["failed_checks"]:
        harness.log(f"FAILED: {failure}")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    sys.exit(main())
