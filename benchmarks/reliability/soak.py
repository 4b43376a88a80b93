#!/usr/bin/env python3
"""Soak: a `deer-worker run --workers 2` pool at ~80% of its measured capacity for a long time.

1. Capacity: the pool's throughput with a standing backlog (the queue kept ~40 deep) for --capacity-s.
2. Soak at --load x capacity for --minutes, sampling every worker's RSS (/proc/PID/status VmRSS) and
   open file descriptors (/proc/PID/fd) and recording each job's service time (the result's
   timings_ms.total: decode + preprocess + inference + postprocess).
After the warm-up: RSS growth (median of the first three samples vs the last three), fd growth,
and p99 service time of the last window vs the first. Every job must end; no worker may restart.

    .venv/bin/python benchmarks/reliability/soak.py --minutes 30 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import redis

from harness import (QUEUE, STREAM, Pool, Producer, RedisServer, account, fd_count, log, percentile,
                     registered_workers, result_messages, rss_bytes, sample_images, wait_all_ended, wait_for,
                     worker_env)

IMAGES = ("day_1920x1080_deer.jpg", "night_1920x1080_deer.jpg", "day_640x360_empty.jpg", "night_640x360_deer.jpg",
          "day_1920x1080_empty.jpg")


def measure_capacity(url: str, conn: redis.Redis, seconds: float, depth: int = 40) -> float:
    """Jobs/s finished while the queue never runs dry (closed loop: top the queue up to `depth`)."""
    from worker.producer import enqueue_snapshot

    images = sample_images(IMAGES)
    producer_conn = redis.Redis.from_url(url)
    n, counted_from, start_len = 0, None, None
    deadline = time.monotonic() + seconds + 3
    while time.monotonic() < deadline:
        while producer_conn.llen(f"rq:queue:{QUEUE}") < depth:
            enqueue_snapshot(producer_conn, images[n % len(images)], f"cam{n % 8}", queue=QUEUE, queued_ttl=3600)
            n += 1
        if counted_from is None and time.monotonic() > deadline - seconds:  # 3 s to reach a steady state
            counted_from, start_len = time.monotonic(), conn.xlen(STREAM)
        time.sleep(0.005)
    capacity = (conn.xlen(STREAM) - start_len) / (time.monotonic() - counted_from)
    wait_for(lambda: conn.llen(f"rq:queue:{QUEUE}") == 0 and conn.zcard(f"rq:wip:{QUEUE}") == 0, 120,
             "the capacity backlog to drain", 0.1)
    return capacity


class Sampler(threading.Thread):
    def __init__(self, pids: list[int], every: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pids, self.every = pids, every
        self.samples: list[dict] = []  # {"t": monotonic, pid: (rss, fds)}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            row = {"t": time.monotonic()}
            for pid in self.pids:
                try:
                    row[pid] = (rss_bytes(pid), fd_count(pid))
                except (OSError, ValueError):
                    row[pid] = None  # gone: a restart, reported as such
            self.samples.append(row)
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


def _growth(samples: list[dict], pid: int, since: float) -> dict:
    rows = [s[pid] for s in samples if s["t"] >= since and s.get(pid)]
    head, tail = rows[:3], rows[-3:]
    rss0, rss1 = statistics.median(r[0] for r in head), statistics.median(r[0] for r in tail)
    return {"rss_mb_start": round(rss0 / 2**20, 1), "rss_mb_end": round(rss1 / 2**20, 1),
            "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2), "fd_start": head[0][1], "fd_end": tail[-1][1],
            "fd_max": max(r[1] for r in rows), "samples": len(rows)}


def run_soak(seconds: float, *, workdir: Path, load: float = 0.8, warmup: float = 60.0, window: float = 60.0,
             capacity_s: float = 15.0, workers: int = 2, sample_every: float = 2.0) -> dict:
    server = RedisServer(workdir / "redis").start()
    conn = server.client(socket_timeout=10)
    pool = Pool(worker_env(server.url(), job_timeout=30, max_age=10.0), workers, log_file=workdir / "pool.log").start()
    producer = sampler = None
    try:
        wait_for(lambda: len(registered_workers(conn)) >= workers, 300, "workers to register", 0.2)
        pids = sorted(registered_workers(conn))
        capacity = measure_capacity(server.url(), conn, capacity_s)
        rate = load * capacity
        log(f"capacity {capacity:.1f} jobs/s; soaking at {rate:.1f} jobs/s for {seconds:.0f} s")
        sampler = Sampler(pids + [pool.proc.pid], sample_every)
        sampler.start()
        already = set(result_messages(conn))
        started_mono, started_wall = time.monotonic(), time.time()
        producer = Producer(server.url(), rate, images=sample_images(IMAGES), job_timeout=30)
        producer.start()
        time.sleep(seconds)
        job_ids = producer.stop()
        sampler.stop()
        ended = wait_all_ended(conn, job_ids, 120)
        acc = account(conn, job_ids)
        messages = [m for j, m in result_messages(conn).items() if j not in already and m["status"] == "ok"]
        pids_at_end = sorted(registered_workers(conn))
    finally:
        if producer is not None and producer.is_alive():
            producer.stop()
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        pool_exit = pool.stop()
        server.stop("sigkill")
    # Service-time windows after the warm-up, by finish time.
    t0 = started_wall + warmup
    windows = {}
    for m in messages:
        if m["finished_at"] >= t0:
            windows.setdefault(int((m["finished_at"] - t0) // window), []).append(m["timings_ms"]["total"])
    full = [windows[k] for k in sorted(windows) if k < int((seconds - warmup) // window)]  # complete windows only
    p99s = [round(percentile(w, 99), 2) for w in full]
    memory = {str(pid): _growth(sampler.samples, pid, started_mono + warmup) for pid in pids}
    memory["pool_parent"] = _growth(sampler.samples, pool.proc.pid, started_mono + warmup)
    return {
        "seconds": seconds, "warmup_s": warmup, "window_s": window, "capacity_jobs_per_s": round(capacity, 1),
        "load": load, "rate_jobs_per_s": round(rate, 1), "jobs": len(job_ids), "all_ended": ended,
        "outcomes": dict(acc.counts()), "kinds": dict(acc.kinds()),
        "unaccounted": {j: acc.outcome[j][0] for j in acc.unaccounted},
        "workers_restarted": pids_at_end != pids, "pool_exit": pool_exit,
        "p99_service_ms_per_window": p99s, "p50_service_ms_per_window": [round(percentile(w, 50), 2) for w in full],
        "jobs_per_window": [len(w) for w in full],
        "p99_last_vs_first": round(p99s[-1] / p99s[0], 3) if len(p99s) >= 2 else None,
        "processes": memory,
        "max_rss_growth_pct": max(v["rss_growth_pct"] for k, v in memory.items() if k != "pool_parent"),
        "max_fd_growth": max(v["fd_end"] - v["fd_start"] for v in memory.values()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    p.add_argument("--warmup", type=float, default=120.0)
    p.add_argument("--window", type=float, default=120.0)
    p.add_argument("--json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="deer-soak-") as tmp:
        report = run_soak(args.minutes * 60, workdir=Path(tmp), load=args.load, warmup=args.warmup,
                          window=args.window)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = (not report["unaccounted"] and not report["workers_restarted"] and report["max_rss_growth_pct"] < 5
          and report["max_fd_growth"] <= 0 and 0.90 <= (report["p99_last_vs_first"] or 0) <= 1.10)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
