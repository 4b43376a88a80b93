"""Cold start: process start -> /readyz 200 of a real `deer-worker run` serving YOLO26s INT8, with an empty
compiled-model cache and with a filled one (goal: cached <= 0.5x uncached), and the worker's RSS at ready;
then with a shadow model (YOLO26s FP32) configured: time to ready (the shadow loads after ready), the time
until the shadow is loaded too, and the RSS with both models loaded.

YOLO26s is built from the ultralytics yaml (random init: speed and memory only), exported dynamic and
quantized with the project's recipe, exactly as benchmarks/rect_speed.py does (cached in
.cache/bench-models). Rounds alternate: a fresh cache dir each round (empty), then the same dir again
(filled). f32 is pinned.

    cpu-exclusive .venv/bin/python benchmarks/cold_start.py [--rounds 3] [--redis URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import rect_speed  # noqa: E402
from shadow_bench import free_port  # noqa: E402
from worker.tools.doctor import host_line, speed_index  # noqa: E402


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def _rss_mb(metrics: bytes) -> float:
    found = re.search(rb"^process_resident_memory_bytes ([0-9.e+]+)$", metrics, re.M)
    return round(float(found.group(1)) / 2**20, 1)


def start(model: Path, cache: str, redis_url: str, shadow: Path | None) -> dict:
    port = free_port()
    env = {**os.environ, "DEER_WORKER_REDIS_URL": redis_url, "DEER_WORKER_QUEUE": "bench-cold-start",
           "DEER_WORKER_METRICS_PORT": str(port), "DEER_WORKER_MODEL": str(model), "DEER_WORKER_PRECISION": "f32",
           "DEER_WORKER_CACHE_DIR": cache, "DEER_WORKER_SHADOW_MODEL": str(shadow or "")}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run"], cwd=ROOT, env=env,
                            start_new_session=True)
    try:
        ready = shadow_at = None
        while time.perf_counter() - started < 600:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited {proc.returncode}")
            if ready is None and _get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                ready = time.perf_counter() - started
                rss_ready = _rss_mb(_get(f"http://127.0.0.1:{port}/metrics")[1])
                if shadow is None:
                    return {"seconds_to_ready": round(ready, 2), "rss_mb": rss_ready}
            if ready is not None:
                metrics = _get(f"http://127.0.0.1:{port}/metrics")[1]
                if b"deer_worker_shadow_model_loaded{" in metrics:
                    shadow_at = time.perf_counter() - started
                    time.sleep(1.0)  # settle
                    return {"seconds_to_ready": round(ready, 2), "rss_mb_at_ready": rss_ready,
                            "seconds_to_shadow_loaded": round(shadow_at, 2),
                            "rss_mb_with_shadow": _rss_mb(_get(f"http://127.0.0.1:{port}/metrics")[1])}
            time.sleep(0.02)
        raise SystemExit("not ready within 600 s")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default=os.environ.get("DEER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    built = rect_speed.models(["yolo26s"])["yolo26s"]
    model, shadow = built["int8"], built["fp32"]
    host = host_line(speed_index())
    rounds = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="deer-cold-") as cache:
            empty = start(model, cache, args.redis, None)
            filled = start(model, cache, args.redis, None)
            with_shadow = start(model, cache, args.redis, shadow)  # the shadow's first load compiles it
            with_shadow_cached = start(model, cache, args.redis, shadow)
        rounds.append({"empty_cache": empty, "filled_cache": filled, "shadow_first": with_shadow,
                       "shadow_cached": with_shadow_cached})
        print(f"round {i}: empty {empty} filled {filled} shadow {with_shadow} shadow cached {with_shadow_cached}",
              file=sys.stderr, flush=True)
    med = lambda key, field: statistics.median(r[key][field] for r in rounds)  # noqa: E731
    summary = {"empty_s": med("empty_cache", "seconds_to_ready"), "filled_s": med("filled_cache", "seconds_to_ready"),
               "rss_mb": med("filled_cache", "rss_mb"),
               "with_shadow_ready_s": med("shadow_cached", "seconds_to_ready"),
               "with_shadow_loaded_s": med("shadow_cached", "seconds_to_shadow_loaded"),
               "rss_mb_with_shadow": med("shadow_cached", "rss_mb_with_shadow")}
    summary["filled_over_empty"] = round(summary["filled_s"] / summary["empty_s"], 3)
    report = {"host": host, "model": str(model), "shadow_model": str(shadow), "rounds": rounds, "median": summary,
              "cached_within_half": summary["filled_over_empty"] <= 0.5}
    print(f"{host}\nYOLO26s INT8 process start -> /readyz 200 (median of {args.rounds}): empty cache "
          f"{summary['empty_s']} s, filled {summary['filled_s']} s ({summary['filled_over_empty']}x); RSS "
          f"{summary['rss_mb']} MB; with a YOLO26s FP32 shadow: ready {summary['with_shadow_ready_s']} s, shadow "
          f"loaded {summary['with_shadow_loaded_s']} s, RSS {summary['rss_mb_with_shadow']} MB", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
