"""What a shadow model costs the primary: enqueue -> result p99 with arrivals independent of results.

One real worker process (`deer-worker run`) on the real Redis serves the primary; its capacity is measured
first (a backlog of --backlog jobs drained, shadow off). Then trials alternate shadow off / shadow on
(shadow_sample 1.0), each a fresh worker process and --seconds of open-loop Poisson arrivals at --load x
capacity (enqueue times drawn in advance; a late enqueue does not shift the later ones). Per job:
result finished_at - the enqueue time. Reported per trial and pooled per setting: p50, p95, p99, the
p99 ratio on/off (goal <= 1.10), and from the worker's /metrics the shadow's runs and skips.

The two trials of a pair see the same arrival times (one seed per pair), back to back, so the host's
drift between pairs cancels in the pair's p99 ratio on/off. The goal is judged on those ratios: their
median, and a distribution-free confidence interval of the median (order statistics, >= 90%
coverage; with 8 pairs the 2nd smallest to the 2nd largest ratio, 93%). "Within 10%" is shown only
when the interval's upper end is <= 1.10, not shown the other way when its lower end is > 1.10, and
unresolved otherwise.

    .venv/bin/python benchmarks/shadow_bench.py [--redis URL] [--pairs 8] [--seconds 15] [--json]

f32 is pinned (DEER_WORKER_PRECISION=f32). Uses the given Redis db's keys under the bench's own queue
name (it deletes that queue, its results stream and the shadow disagreement stream before each trial).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.constants import SHADOW_DISAGREEMENTS_STREAM  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402

DEMO = ROOT / "models" / "demo"
QUEUE, STREAM = "bench-shadow", "bench-shadow:results"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    def __init__(self, args, shadow: bool):
        self.port = free_port()
        env = {**os.environ, "DEER_WORKER_REDIS_URL": args.redis, "DEER_WORKER_QUEUE": QUEUE,
               "DEER_WORKER_RESULTS_STREAM": STREAM, "DEER_WORKER_METRICS_PORT": str(self.port),
               "DEER_WORKER_MODEL": args.model, "DEER_WORKER_PRECISION": "f32", "DEER_WORKER_MAX_AGE": "600",
               "DEER_WORKER_ZONES": str(DEMO / "zones.yaml"),
               "DEER_WORKER_SHADOW_MODEL": args.shadow_model if shadow else "", "DEER_WORKER_SHADOW_SAMPLE": "1.0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run"], cwd=ROOT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200 and (
                        not shadow or b"deer_worker_shadow_model_loaded{" in urllib.request.urlopen(
                            f"http://127.0.0.1:{self.port}/metrics", timeout=2).read()):
                    return  # ready, and the shadow (loaded after ready) is warm too
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"worker exited {self.proc.returncode} before ready")
            time.sleep(0.2)
        raise SystemExit("worker not ready within 300 s")

    def shadow_counts(self) -> dict:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        counts = {"ran": 0.0, "skipped": 0.0, "errors": 0.0}
        for line in text.splitlines():
            for key, family in (("ran", "deer_worker_shadow_agreement_total"), ("skipped", "deer_worker_shadow_skipped_total"),
                                ("errors", "deer_worker_shadow_errors_total")):
                if line.startswith(family + "{"):
                    counts[key] += float(line.rsplit(" ", 1)[1])
        rss = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", text, re.M)
        counts["rss_mb"] = round(float(rss.group(1)) / 2**20, 1) if rss else None
        return counts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _reset(conn) -> None:
    conn.delete(STREAM, SHADOW_DISAGREEMENTS_STREAM, f"rq:queue:{QUEUE}")


def _finished(conn) -> dict[str, float]:
    return {m["job_id"]: m["finished_at"] for m in (json.loads(f[b"result"]) for _, f in conn.xrange(STREAM))}


def capacity(conn, args, images) -> float:
    worker = Worker(args, shadow=False)
    try:
        _reset(conn)
        started = time.time()
        jobs = [enqueue_snapshot(conn, images[i % len(images)], "cam1", queue=QUEUE) for i in range(args.backlog)]
        while len(_finished(conn)) < len(jobs):
            time.sleep(0.05)
        finished = _finished(conn)
        return len(jobs) / (max(finished.values()) - started)
    finally:
        worker.stop()


def trial(conn, args, images, rate: float, shadow: bool, seed: int) -> dict:
    worker = Worker(args, shadow)
    try:
        _reset(conn)
        rng = random.Random(seed)
        offsets, t = [], 0.0
        while True:
            t += rng.expovariate(rate)
            if t > args.seconds:
                break
            offsets.append(t)
        enqueued: dict[str, float] = {}
        start = time.time() + 0.2
        for i, offset in enumerate(offsets):
            delay = start + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            at = time.time()
            enqueued[enqueue_snapshot(conn, images[i % len(images)], "cam1", queue=QUEUE).id] = at
        deadline = time.monotonic() + 120
        while len(_finished(conn)) < len(enqueued) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the shadow's last idle moment
        finished = _finished(conn)
        latencies = np.array([(finished[j] - at) * 1e3 for j, at in enqueued.items() if j in finished])
        return {"shadow": shadow, "jobs": len(enqueued), "results": len(latencies),
                "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                "p95_ms": round(float(np.percentile(latencies, 95)), 2),
                "p99_ms": round(float(np.percentile(latencies, 99)), 2),
                "latencies_ms": latencies.tolist(), **worker.shadow_counts()}
    finally:
        worker.stop()


def median_interval(values: list[float], coverage: float = 0.90) -> tuple[float, float, float]:
    """(lower, upper, its coverage): the order statistics x(k) and x(n+1-k) around the median with the
    largest k whose coverage 1 - 2 P(Binomial(n, 1/2) < k) is still >= `coverage` (k = 1 at least)."""
    ordered, n = sorted(values), len(values)
    covered = lambda k: 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n  # noqa: E731
    k = max([k for k in range(1, n // 2 + 1) if covered(k) >= coverage] or [1])
    return ordered[k - 1], ordered[n - k], round(covered(k), 3)


def pair_verdict(ratios: list[float], goal: float = 1.10) -> dict:
    lower, upper, covered = median_interval(ratios)
    verdict = "within" if upper <= goal else "not within" if lower > goal else "unresolved"
    return {"median": round(statistics.median(ratios), 3), "interval": [round(lower, 3), round(upper, 3)],
            "interval_coverage": covered, "min": round(min(ratios), 3), "max": round(max(ratios), 3),
            "goal": goal, "verdict": verdict}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default=os.environ.get("DEER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"))
    parser.add_argument("--model", default=str(DEMO / "deer-yolo26n_dynamic_raw_fp32_openvino_model"))
    parser.add_argument("--shadow-model", default=str(DEMO / "deer-yolo26n_dynamic_raw_int8_openvino_model"))
    parser.add_argument("--pairs", type=int, default=8, help="off/on trial pairs, interleaved")
    parser.add_argument("--seconds", type=float, default=15.0, help="arrivals per trial")
    parser.add_argument("--load", type=float, default=0.8, help="arrival rate as a share of measured capacity")
    parser.add_argument("--backlog", type=int, default=120, help="jobs drained to measure capacity")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    conn = redis.Redis.from_url(args.redis)
    images = [p.read_bytes() for p in sorted((DEMO / "samples").glob("*.jpg"))]
    host = host_line(speed_index())
    cap = capacity(conn, args, images)
    rate = args.load * cap
    trials = []
    for pair in range(args.pairs):
        for shadow in ((False, True) if pair % 2 == 0 else (True, False)):
            trials.append(trial(conn, args, images, rate, shadow, seed=pair))
            t = trials[-1]
            print(f"pair {pair} shadow {'on ' if shadow else 'off'}: {t['results']}/{t['jobs']} results, p50 "
                  f"{t['p50_ms']} p95 {t['p95_ms']} p99 {t['p99_ms']} ms; shadow ran {t['ran']:.0f} skipped "
                  f"{t['skipped']:.0f} errors {t['errors']:.0f}; RSS {t['rss_mb']} MB", file=sys.stderr, flush=True)
    pooled = {}
    for shadow in (False, True):
        lat = np.concatenate([t["latencies_ms"] for t in trials if t["shadow"] == shadow])
        pooled["on" if shadow else "off"] = {f"p{q}_ms": round(float(np.percentile(lat, q)), 2) for q in (50, 95, 99)}
    ratio = pooled["on"]["p99_ms"] / pooled["off"]["p99_ms"]
    pair_ratios = [next(t for t in trials[2 * i:2 * i + 2] if t["shadow"])["p99_ms"]
                   / next(t for t in trials[2 * i:2 * i + 2] if not t["shadow"])["p99_ms"] for i in range(args.pairs)]
    verdict = pair_verdict(pair_ratios)
    report = {"host": host, "model": args.model, "shadow_model": args.shadow_model, "capacity_jobs_s": round(cap, 2),
              "rate_jobs_s": round(rate, 2), "seconds": args.seconds, "pairs": args.pairs, "pooled": pooled,
              "p99_ratio_on_off": round(ratio, 3), "pair_p99_ratios": [round(r, 3) for r in pair_ratios],
              "pair_p99_ratio": verdict, "within_10pct": verdict["verdict"],
              "trials": [{k: v for k, v in t.items() if k != "latencies_ms"} for t in trials]}
    print(f"{host}\ncapacity {cap:.2f} jobs/s, arrivals {rate:.2f}/s (open loop); pooled off {pooled['off']} "
          f"on {pooled['on']}; pooled p99 on/off {ratio:.3f}; per-pair p99 on/off {report['pair_p99_ratios']}: "
          f"median {verdict['median']}, {verdict['interval_coverage']:.0%} interval {verdict['interval']}: "
          f"{verdict['verdict']} 10%", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
