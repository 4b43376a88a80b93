#!/usr/bin/env python3
"""Soak: a `deer-worker run --workers 2` pool at ~80% of its measured capacity for a long time.

1. Capacity: the pool's throughput with a standing backlog (the queue kept ~40 deep) for --capacity-s.
2. Soak at --load x capacity for --minutes, sampling every worker's RSS (/proc/PID/status VmRSS) and
   open file descriptors (/proc/PID/fd) and recording each job's service time (the result's
   timings_ms.total: decode + preprocess + inference + postprocess).
After the warm-up (--warmup seconds and, if given, --warmup-jobs jobs done): RSS growth (median of the
first --median-of samples vs the last ones), fd growth (a rise in both halves of the run: a trend, not
one end sample), and p99 service time of the last window vs the
first. Every job must end; no worker may restart.

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
                     registered_workers, result_messages, rss_bytes, sample_images, unaccounted_failures,
                     wait_all_ended, wait_for, worker_env)
from worker.evaluation.host import host_line  # noqa: E402 - harness puts the repo on sys.path

IMAGES = ("day_1920x1080_deer.jpg", "night_1920x1080_deer.jpg", "day_640x360_empty.jpg", "night_640x360_deer.jpg",
          "day_1920x1080_empty.jpg")


def measure_capacity(url: str, conn: redis.Redis, seconds: float, depth: int = 40) -> float:
    """Jobs/s finished while the queue never runs dry (closed loop: top the queue up to `depth`)."""
    from worker.jobqueue.producer import enqueue_snapshot

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
    def __init__(self, pids: list[int], every: float, conn: redis.Redis | None = None) -> None:
        super().__init__(daemon=True, name="sampler")
        self.pids, self.every, self.conn = pids, every, conn
        self.samples: list[dict] = []  # {"t": monotonic, "results": stream length, pid: (rss, fds)}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            row = {"t": time.monotonic()}
            if self.conn is not None:
                try:
                    row["results"] = self.conn.xlen(STREAM)  # jobs done so far, for a warm-up in jobs
                except redis.RedisError:
                    pass
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


def _warm(samples: list[dict], since: float, warmup_jobs: int) -> list[dict]:
    """The samples after the warm-up: `since` (monotonic) has passed and the pool has finished
    `warmup_jobs` jobs since the first sample."""
    done0 = samples[0].get("results", 0) if samples else 0
    return [s for s in samples if s["t"] >= since and s.get("results", done0) - done0 >= warmup_jobs]


def _growth(samples: list[dict], pid: int, since: float, median_of: int = 3, warmup_jobs: int = 0) -> dict:
    rows = [s[pid] for s in _warm(samples, since, warmup_jobs) if s.get(pid)]
    head, tail = rows[:median_of], rows[-median_of:]
    rss0, rss1 = statistics.median(r[0] for r in head), statistics.median(r[0] for r in tail)
    return {"rss_mb_start": round(rss0 / 2**20, 1), "rss_mb_end": round(rss1 / 2**20, 1),
            "rss_growth_pct": round(100 * (rss1 - rss0) / rss0, 2),
            "fd_start": statistics.median_low(r[1] for r in head), "fd_end": statistics.median_low(r[1] for r in tail),
            "fd_max": max(r[1] for r in rows), "fd_growth": _fd_trend([r[1] for r in rows]), "samples": len(rows)}


def _fd_trend(fds: list[int]) -> int:
    """Descriptors a leak added: how far the count rose in both halves of the run (the medians of its
    first, middle and last third). A leak keeps growing; a socket that opened once and stays (a Redis
    reconnect, a heartbeat connection caught at the last samples) is a step in one half, not a trend."""
    third = max(1, len(fds) // 3)
    first, middle, last = (statistics.median_low(part) for part in (fds[:third], fds[third:-third] or fds, fds[-third:]))
    return max(0, min(middle - first, last - middle))


def _rss_trace(samples: list[dict], pid: int, start: float) -> list[tuple[float, float]]:
    """(seconds since the soak started, RSS MB), warm-up included: every 5 s for the first two
    minutes (where the warm-up is decided), then every minute, and the last sample."""
    rows = [(s["t"] - start, s[pid][0]) for s in samples if s.get(pid)]
    trace, next_t = [], 0.0
    for t, rss in rows:
        if t >= next_t:
            trace.append((round(t, 1), round(rss / 2**20, 1)))
            next_t = t + (5.0 if t < 120 else 60.0)
    if rows and trace[-1][0] != round(rows[-1][0], 1):
        trace.append((round(rows[-1][0], 1), round(rows[-1][1] / 2**20, 1)))
    return trace


def run_soak(seconds: float, *, workdir: Path, load: float = 0.8, warmup: float = 60.0, window: float = 60.0,
             capacity_s: float = 15.0, workers: int = 2, sample_every: float = 2.0, median_of: int = 3,
             warmup_jobs: int = 0, after_warmup: float = 0.0) -> dict:
    """after_warmup: make the soak at least this long past the warm-up, whose `warmup_jobs` take longer
    on a slower host: the soak is lengthened to what the measured rate needs (the short test's way of
    following the host's pace instead of failing on a slow day)."""
    server = RedisServer(workdir / "redis").start()
    conn = server.client(socket_timeout=10)
    pool = Pool(worker_env(server.url(), job_timeout=30, max_age=10.0), workers, log_file=workdir / "pool.log").start()
    producer = sampler = None
    try:
        wait_for(lambda: len(registered_workers(conn)) >= workers, 300, "workers to register", 0.2)
        pids = sorted(registered_workers(conn))
        capacity = measure_capacity(server.url(), conn, capacity_s)
        rate = load * capacity
        if after_warmup:
            seconds = max(seconds, warmup + after_warmup, warmup_jobs / rate + after_warmup)
        log(f"capacity {capacity:.1f} jobs/s; soaking at {rate:.1f} jobs/s for {seconds:.0f} s")
        sampler = Sampler(pids + [pool.proc.pid], sample_every, server.client(socket_timeout=10))
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
    # RSS and fds: from the later of `warmup` seconds and `warmup_jobs` jobs done, to the end.
    memory = {str(pid): _growth(sampler.samples, pid, started_mono + warmup, median_of, warmup_jobs)
              for pid in pids}
    memory["pool_parent"] = _growth(sampler.samples, pool.proc.pid, started_mono + warmup, median_of, warmup_jobs)
    warm = _warm(sampler.samples, started_mono + warmup, warmup_jobs)
    for pid in pids:
        memory[str(pid)]["rss_mb_trace"] = _rss_trace(sampler.samples, pid, started_mono)
    return {
        "seconds": seconds, "warmup_s": warmup, "warmup_jobs": warmup_jobs,
        "memory_baseline_at_s": round(warm[0]["t"] - started_mono, 1) if warm else None,
        "window_s": window, "capacity_jobs_per_s": round(capacity, 1),
        "load": load, "rate_jobs_per_s": round(rate, 1), "jobs": len(job_ids), "all_ended": ended,
        "outcomes": dict(acc.counts()), "kinds": dict(acc.kinds()),
        "unaccounted": {j: acc.outcome[j][0] for j in acc.unaccounted},
        "workers_restarted": pids_at_end != pids, "pool_exit": pool_exit,
        "p99_service_ms_per_window": p99s, "p50_service_ms_per_window": [round(percentile(w, 50), 2) for w in full],
        "jobs_per_window": [len(w) for w in full],
        "p99_last_vs_first": round(p99s[-1] / p99s[0], 3) if len(p99s) >= 2 else None,
        "processes": memory,
        "max_rss_growth_pct": max(v["rss_growth_pct"] for k, v in memory.items() if k != "pool_parent"),
        "max_fd_growth": max(v["fd_growth"] for v in memory.values()),
    }


MAX_RSS_GROWTH_PCT = 5.0
P99_LAST_VS_FIRST = (0.90, 1.10)  # the last window's p99 service time within 10% of the first's


def failed_checks(report: dict) -> list[str]:
    """The run's verdict, check by check: every job ended, no worker restarted, RSS growth under
    MAX_RSS_GROWTH_PCT, no fd growth, the p99 of the last window within P99_LAST_VS_FIRST of the first."""
    failures = unaccounted_failures(report)
    if report["workers_restarted"]:
        failures.append("a worker restarted")
    if report["max_rss_growth_pct"] >= MAX_RSS_GROWTH_PCT:
        failures.append(f"RSS grew {report['max_rss_growth_pct']}% (a worker, max), not under {MAX_RSS_GROWTH_PCT:g}%")
    if report["max_fd_growth"] > 0:
        failures.append(f"open fds grew by {report['max_fd_growth']}")
    low, high = P99_LAST_VS_FIRST
    ratio = report["p99_last_vs_first"]
    if ratio is None:
        failures.append(f"fewer than two full windows to compare: p99 per window {report['p99_service_ms_per_window']}")
    elif not low <= ratio <= high:
        failures.append(f"p99 service time last vs first window {ratio}, outside {low:g}-{high:g} "
                        f"(p99 per window {report['p99_service_ms_per_window']} ms)")
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--load", type=float, default=0.8, help="fraction of the measured capacity")
    p.add_argument("--warmup", type=float, default=120.0)
    p.add_argument("--window", type=float, default=300.0, help="p99 windows: the last 5 minutes vs the first 5")
    p.add_argument("--median-of", type=int, default=5, help="RSS samples (2 s apart) in each end's median")
    p.add_argument("--warmup-jobs", type=int, default=0, help="RSS baseline also not before this many jobs done")
    p.add_argument("--json")
    args = p.parse_args()
    host = host_line()  # as the run starts: load and ISA decide the figures
    with tempfile.TemporaryDirectory(prefix="deer-soak-") as tmp:
        report = run_soak(args.minutes * 60, workdir=Path(tmp), load=args.load, warmup=args.warmup,
                          window=args.window, median_of=args.median_of, warmup_jobs=args.warmup_jobs)
    report["failed_checks"] = failed_checks(report)
    text = json.dumps({"host": host, **report}, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 1 if report["failed_checks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
