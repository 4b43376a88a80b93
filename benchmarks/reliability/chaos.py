#!/usr/bin/env python3
"""Worker crashes under load: SIGKILL a random worker of a `deer-worker run --workers 2` pool while it
holds jobs, again and again, and account for every job.

A producer enqueues at a steady rate. Each round picks a worker that has been up for --min-uptime
seconds (younger ones are a crash loop, which the pool deliberately restarts with backoff), waits
until it holds started jobs, SIGKILLs it and measures the time until every job it held has been
released: requeued, ended, or taken by another worker (the pool recovers them via recovery.py), and
the time until the pool's replacement for it registered with RQ (restarted, model loaded).
At the end every enqueued job must be ok, expired or failed with a reason: none started, none
queued, none missing (a missing job hash is a lost job).

    .venv/bin/python benchmarks/reliability/chaos.py --kills 50 [--rate 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from harness import (QUEUE, Pool, Producer, RedisServer, account, log, registered_workers, seeded,
                     unaccounted_failures, wait_all_ended, wait_for, worker_env)
from worker.evaluation.host import host_line  # noqa: E402 - harness puts the repo on sys.path


def _released(conn, job_id: str, dead_name: str) -> bool:
    """The dead worker no longer holds this job: it ended, is back in the queue, or another worker runs it."""
    status, owner = conn.hmget(f"rq:job:{job_id}", "status", "worker_name")
    status = status.decode() if status else "missing"
    if status in ("finished", "failed", "canceled", "stopped"):
        return True
    if status == "started":
        return (owner or b"").decode() != dead_name
    if status in ("queued", "scheduled", "deferred"):
        return conn.lpos(f"rq:queue:{QUEUE}", job_id) is not None
    return False  # missing: lost, never "released"


def _ended_at(conn, job_id: str) -> float | None:
    raw = conn.hget(f"rq:job:{job_id}", "ended_at")
    if not raw:
        return None
    return datetime.strptime(raw.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


class Registrations(threading.Thread):
    """When each worker name first appeared in RQ's worker set (time.time()): a killed worker's
    replacement is the next name of the same pool index (deer-<host>-w<i>.<pid>)."""

    def __init__(self, conn, every: float = 0.05) -> None:
        super().__init__(daemon=True, name="registrations")
        self.conn, self.every = conn, every
        self.first: dict[str, float] = {}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            self._stop_event.wait(self.every)

    def poll(self) -> None:
        try:
            for name in registered_workers(self.conn).values():
                self.first.setdefault(name, time.time())
        except Exception:  # noqa: BLE001 - a missed poll only delays a reading
            pass

    def stop(self) -> None:
        """Stop polling, after one last look: the caller may have seen a registration (the pool whole
        again) that the thread had not polled yet, and a replacement never recorded reads as none."""
        self._stop_event.set()
        self.join(5)
        self.poll()

    def replacement(self, dead: str, after: float) -> float | None:
        """Seconds from `after` (the kill) to the first registration of a new worker of the same index."""
        index = dead.rsplit(".", 1)[0]
        times = [t for name, t in self.first.items() if name.rsplit(".", 1)[0] == index and name != dead
                 and t > after]
        return min(times) - after if times else None


def run_chaos(kills: int, *, workdir: Path, workers: int = 2, rate: float = 30.0, job_timeout: int = 10,
              max_age: float = 10.0, min_uptime: float = 10.0, batch: str = "4", seed: int | None = None,
              settle: float = 120.0) -> dict:
    rng = seeded(seed)
    server = RedisServer(workdir / "redis").start()
    conn = server.client()
    pool = Pool(worker_env(server.url(), job_timeout=job_timeout, max_age=max_age, batch=batch), workers,
                log_file=workdir / "pool.log").start()
    producer = None
    registrations = Registrations(server.client())
    registrations.start()
    first_seen: dict[int, float] = {}
    rounds = []
    try:
        wait_for(lambda: len(registered_workers(conn)) >= workers, 300, f"{workers} workers to register", 0.2)
        producer = Producer(server.url(), rate, job_timeout=job_timeout, retries=2)
        producer.start()
        started = time.monotonic()
        while len(rounds) < kills:
            def eligible():
                alive = set(pool.children())
                names = {pid: name for pid, name in registered_workers(conn).items() if pid in alive}
                for pid in names:
                    first_seen.setdefault(pid, time.monotonic())
                return [(pid, name) for pid, name in names.items()
                        if time.monotonic() - first_seen[pid] >= min_uptime]

            candidates = wait_for(eligible, 300, "a worker up for the minimum uptime", 0.1)
            pid, name = rng.choice(candidates)
            executions_key = f"rq:worker:{name}:executions"

            def held():
                time.sleep(rng.uniform(0, 0.01))  # land anywhere in the batch, not only at its start
                return [m.decode() for m in conn.smembers(executions_key)]

            members = wait_for(held, 60, f"{name} to hold jobs", 0.001)
            os.kill(pid, signal.SIGKILL)
            killed_at, killed_wall = time.monotonic(), time.time()
            held_ids = sorted({m.split(":", 1)[0] for m in members})
            try:
                wait_for(lambda: all(_released(conn, j, name) for j in held_ids), 2 * job_timeout + 30,
                         f"the jobs of {name} to be released", 0.01)
                recovery = time.monotonic() - killed_at
            except TimeoutError:
                recovery = None
            rounds.append({"pid": pid, "name": name, "held": len(held_ids), "jobs": held_ids,
                           "killed_at": killed_wall, "recovery_s": recovery})
            log(f"kill {len(rounds)}/{kills}: {name} held {len(held_ids)} job(s); released in "
                f"{'NEVER' if recovery is None else f'{recovery:.3f} s'}")
        elapsed = time.monotonic() - started
        job_ids = producer.stop()
        ended = wait_all_ended(conn, job_ids, settle)
        acc = account(conn, job_ids)
        for r in rounds:  # kill -> the held job's final end (retried on another worker, or failed)
            ends = [_ended_at(conn, j) for j in r["jobs"]]
            r["done_s"] = max(e for e in ends if e) - r["killed_at"] if all(ends) else None
        def alive():
            return len([p for p in pool.children() if p in registered_workers(conn)])

        try:  # the last one killed is back once it has loaded its model
            wait_for(lambda: alive() >= workers, 120, "the pool to be whole again", 0.2)
        except TimeoutError:
            pass
        alive_at_end = alive()
        started_left = conn.zcard(f"rq:wip:{QUEUE}")
        registrations.stop()
        for r in rounds:  # kill -> its replacement registered (the pool restarted it and it loaded its model)
            r["restart_s"] = registrations.replacement(r["name"], r["killed_at"])
    finally:
        registrations.stop()
        if producer is not None and producer.is_alive():
            producer.stop()
        pool_exit = pool.stop()
        server.stop("sigkill")
    recoveries = [r["recovery_s"] for r in rounds if r["recovery_s"] is not None]
    dones = [r["done_s"] for r in rounds if r.get("done_s") is not None]
    restarts = [r["restart_s"] for r in rounds if r.get("restart_s") is not None]
    return {
        "kills": len(rounds), "jobs": len(job_ids), "duration_s": round(elapsed, 1), "rate": rate,
        "job_timeout_s": job_timeout, "max_age_s": max_age, "all_ended": ended,
        "held_per_kill": [r["held"] for r in rounds],
        "not_recovered": sum(r["recovery_s"] is None for r in rounds),
        "recovery_s": _stats(recoveries), "kill_to_jobs_done_s": _stats(dones),
        "not_restarted": sum(r.get("restart_s") is None for r in rounds), "kill_to_replacement_registered_s":
        _stats(restarts),
        "outcomes": dict(acc.counts()), "kinds": dict(acc.kinds()),
        "unaccounted": {job_id: acc.outcome[job_id][0] for job_id in acc.unaccounted},
        "started_registry_left": started_left, "workers_alive_at_end": alive_at_end, "pool_exit": pool_exit,
    }


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    return {"n": len(values), "min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def failed_checks(report: dict, workers: int) -> list[str]:
    """The run's verdict, check by check: every job accounted for, every kill's jobs released within 2x the
    job timeout, none left started, every killed worker replaced, the pool whole at the end."""
    failures = unaccounted_failures(report)
    if report["not_recovered"]:
        failures.append(f"{report['not_recovered']} kills whose jobs were never released")
    if report["started_registry_left"]:
        failures.append(f"{report['started_registry_left']} jobs left started")
    limit = 2 * report["job_timeout_s"]
    if report["recovery_s"].get("max", 0) > limit:
        failures.append(f"jobs released {report['recovery_s']['max']} s after a kill (max), over {limit} s")
    if report["not_restarted"]:
        failures.append(f"{report['not_restarted']} killed workers never replaced")
    if report["workers_alive_at_end"] != workers:
        failures.append(f"{report['workers_alive_at_end']} of {workers} workers alive at the end")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate", type=float, default=30.0, help="jobs/s the producer enqueues")
    p.add_argument("--job-timeout", type=int, default=10)
    p.add_argument("--max-age", type=float, default=10.0)
    p.add_argument("--min-uptime", type=float, default=10.0)
    p.add_argument("--batch", default="4")
    p.add_argument("--seed", type=int)
    p.add_argument("--json", help="write the report here too")
    args = p.parse_args()
    host = host_line()  # as the run starts: load and ISA decide the figures
    with tempfile.TemporaryDirectory(prefix="deer-chaos-") as tmp:
        report = run_chaos(args.kills, workdir=Path(tmp), workers=args.workers, rate=args.rate,
                           job_timeout=args.job_timeout, max_age=args.max_age, min_uptime=args.min_uptime,
                           batch=args.batch, seed=args.seed)
    report["failed_checks"] = failed_checks(report, args.workers)
    text = json.dumps({"host": host, **report}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
