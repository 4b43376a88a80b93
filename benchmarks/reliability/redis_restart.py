#!/usr/bin/env python3
"""Redis restarts under load: a persistent redis-server (AOF) of our own, a `deer-worker run
--workers 2` pool and a steady producer; stop Redis (SIGTERM, SHUTDOWN, or SIGKILL as a crash) and
start it again on the same port and data directory, again and again.

Measures, per restart, the time from Redis answering again to the first job finished after it
by every worker (each reconnects on its own; target <= 5 s). At the end every job Redis acknowledged (enqueue returned) must
be accounted for: ok, expired or failed with a reason; none lost, none stuck.

    .venv/bin/python benchmarks/reliability/redis_restart.py --restarts 20 [--how sigterm|shutdown|sigkill]
        [--appendfsync always|everysec] [--down 1.0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness import (STREAM, Pool, Producer, RedisServer, account, log, registered_workers, unaccounted_failures,
                     wait_all_ended, wait_for, worker_env)
from worker.evaluation.host import host_line  # noqa: E402 - harness puts the repo on sys.path


def _first_finished_after(conn, since: float, last_id: bytes | None, workers: set[str]) -> dict[str, float]:
    """worker name -> finished_at of its first result message after `since` (wall clock), reading on
    from last_id; empty until every one of `workers` has finished a job."""
    firsts: dict[str, float] = {}
    for _, fields in conn.xrange(STREAM, min=last_id or "-", max="+"):
        message = json.loads(fields[b"result"])
        if message["finished_at"] >= since:
            firsts.setdefault(message["worker"], message["finished_at"])
    return firsts if workers <= set(firsts) else {}


def run_restarts(restarts: int, *, workdir: Path, how: str = "sigterm", appendfsync: str = "always",
                 down: float = 1.0, interval: float = 8.0, rate: float = 20.0, workers: int = 2,
                 job_timeout: int = 10, max_age: float = 30.0, settle: float = 180.0) -> dict:
    server = RedisServer(workdir / "redis", conf=["appendonly yes", f"appendfsync {appendfsync}"]).start()
    conn = server.client(socket_timeout=5)
    pool = Pool(worker_env(server.url(), job_timeout=job_timeout, max_age=max_age), workers,
                log_file=workdir / "pool.log").start()
    producer = Producer(server.url(), rate, job_timeout=job_timeout)
    rounds = []
    try:
        wait_for(lambda: len(registered_workers(conn)) >= workers, 300, "workers to register", 0.2)
        producer.start()
        for n in range(restarts):
            time.sleep(interval)
            acked_before = len(producer.acked)
            last = conn.xrevrange(STREAM, count=1)
            names = set(registered_workers(conn).values())
            stopped_at = time.time()
            server.stop(how)
            time.sleep(down)
            server.start()
            up_at = time.time()
            conn = server.client(socket_timeout=5)
            try:  # each worker counts: the slowest one to finish a job again is the reconnect time
                firsts = wait_for(lambda: _first_finished_after(conn, up_at, last[0][0] if last else None, names),
                                  90, "every worker to finish a job after the restart", 0.05)
                reconnect = max(firsts.values()) - up_at
            except TimeoutError:
                reconnect = float("inf")
            before = [job_id for job_id, _ in producer.acked[:acked_before]]
            # jobs in flight when Redis went away must not wait for their heartbeat TTL
            caught_up = time.time() - up_at if wait_all_ended(conn, before, 90) else float("inf")
            rounds.append({"acked_before": acked_before, "down_s": round(up_at - stopped_at, 3),
                           "reconnect_s": round(reconnect, 3), "acked_before_ended_s": round(caught_up, 3)})
            log(f"restart {n + 1}/{restarts} ({how}): Redis down {up_at - stopped_at:.2f} s; every worker finished "
                f"a job again within {reconnect:.2f} s of it being back; all jobs acknowledged before the stop "
                f"ended {caught_up:.2f} s after it")
        time.sleep(interval)
        job_ids = producer.stop()
        acked_before_last = [job_id for job_id, at in producer.acked if at < stopped_at] if rounds else []
        settle_from = time.monotonic()
        ended = wait_all_ended(conn, job_ids, settle)
        settle_s = time.monotonic() - settle_from
        acc = account(conn, job_ids)
        lost_acked = [j for j in acked_before_last if acc.outcome[j][0] == "missing"]
        started_left = conn.zcard("rq:wip:deer-rel")
        workers_alive = len(registered_workers(conn))
    finally:
        if producer.is_alive():
            producer.stop()
        pool_exit = pool.stop()
        server.stop("sigkill")
    reconnects = [r["reconnect_s"] for r in rounds]
    return {
        "restarts": len(rounds), "how": how, "appendfsync": appendfsync, "jobs_acknowledged": len(job_ids),
        "enqueue_errors_during_outages": producer.errors, "all_ended": ended,
        "seconds_to_end_after_load": round(settle_s, 1),
        "reconnect_s": {"min": min(reconnects), "median": round(statistics.median(reconnects), 3),
                        "max": max(reconnects)} if reconnects else {},
        "acked_before_ended_s": [r["acked_before_ended_s"] for r in rounds],
        "down_s": [r["down_s"] for r in rounds], "outcomes": dict(acc.counts()), "kinds": dict(acc.kinds()),
        "unaccounted": {j: acc.outcome[j][0] for j in acc.unaccounted}, "lost_acknowledged": lost_acked,
        "started_registry_left": started_left, "workers_registered_at_end": workers_alive, "pool_exit": pool_exit,
    }


MAX_RECONNECT_S = 5.0  # every worker finishes a job again within this of Redis answering


def failed_checks(report: dict) -> list[str]:
    """The run's verdict, check by check: every job accounted for, no acknowledged job lost, none left
    started, every worker back at work within MAX_RECONNECT_S of every restart."""
    failures = unaccounted_failures(report)
    if report["lost_acknowledged"]:
        failures.append(f"{len(report['lost_acknowledged'])} acknowledged jobs lost: {report['lost_acknowledged'][:5]}")
    if report["started_registry_left"]:
        failures.append(f"{report['started_registry_left']} jobs left started")
    if report["reconnect_s"].get("max", float("inf")) > MAX_RECONNECT_S:
        failures.append(f"reconnect {report['reconnect_s'].get('max', 'never measured')} s (max), over "
                        f"{MAX_RECONNECT_S:g} s")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--restarts", type=int, default=20)
    p.add_argument("--how", choices=["sigterm", "shutdown", "sigkill"], default="sigterm")
    p.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    p.add_argument("--down", type=float, default=1.0, help="seconds Redis stays down")
    p.add_argument("--interval", type=float, default=8.0, help="seconds of load between restarts")
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--json")
    args = p.parse_args()
    host = host_line()  # as the run starts: load and ISA decide the figures
    with tempfile.TemporaryDirectory(prefix="deer-redis-restart-") as tmp:
        report = run_restarts(args.restarts, workdir=Path(tmp), how=args.how, appendfsync=args.appendfsync,
                              down=args.down, interval=args.interval, rate=args.rate)
    report["failed_checks"] = failed_checks(report)
    text = json.dumps({"host": host, **report}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
