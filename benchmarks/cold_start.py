"""Cold start: process start -> /readyz 200 of a real `deer-worker run` serving YOLO26s INT8, with an empty
compiled-model cache and with a filled one (goal: cached <= 0.5x uncached), and the worker's RSS at ready;
then with a shadow model (YOLO26s FP32) configured: time to ready (the shadow loads after ready), the time
until the shadow is loaded too, and the RSS with both models loaded.

YOLO26s is built from the ultralytics yaml (random init: speed and memory only), exported dynamic and
quantized with the project's recipe, exactly as benchmarks/rect_speed.py does (cached in
.cache/bench-models). Rounds alternate: a fresh cache dir each round (empty), then the same dir again
(filled). f32 is pinned.

Each start's phases come from the worker's own start-up log line (service._log_start): before the model
(interpreter, imports, config), the model (reading the IR, compiling each (shape, batch) or loading it
from the cache, the warm-up runs or the batch-1/batch-4 timing, the rest of the detector's construction)
and after it (Redis, metrics, recovery, RQ registration) until ready. --baseline DIR starts another
checkout's worker too (e.g. a git worktree of an older commit), in the same rounds, alternating, for a
before/after from one run (an older worker may not log its phases: then only its totals).

    .venv/bin/python benchmarks/cold_start.py [--rounds 3] [--redis URL] [--baseline DIR] [--json]
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
from worker.evaluation.host import host_line, speed_index  # noqa: E402


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


def _phases(log_text: str) -> dict | None:
    found = re.search(r"start-up seconds (\{.*\})$", log_text, re.M)
    return json.loads(found.group(1)) if found else None


def start(model: Path, cache: str, redis_url: str, shadow: Path | None, checkout: Path = ROOT) -> dict:
    """One worker process from `checkout` until /readyz 200 (and its shadow loaded, with one), then stopped."""
    with tempfile.TemporaryFile("w+") as log:
        result = _start(model, cache, redis_url, shadow, checkout, log)
        log.seek(0)
        result["phases"] = _phases(log.read())
    return result


def _start(model: Path, cache: str, redis_url: str, shadow: Path | None, checkout: Path, log) -> dict:
    port = free_port()
    env = {**os.environ, "DEER_WORKER_REDIS_URL": redis_url, "DEER_WORKER_QUEUE": "bench-cold-start",
           "DEER_WORKER_METRICS_PORT": str(port), "DEER_WORKER_MODEL": str(model), "DEER_WORKER_PRECISION": "f32",
           "DEER_WORKER_CACHE_DIR": cache, "DEER_WORKER_SHADOW_MODEL": str(shadow or "")}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "INFO", "run"], cwd=checkout, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
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


def _median_phases(starts: list[dict]) -> dict | None:
    """The median of each logged phase (the detector's too) over starts that logged them."""
    logged = [start["phases"] for start in starts if start.get("phases")]
    if not logged:
        return None
    median = {key: statistics.median(p[key] for p in logged) for key in logged[0] if key != "detector"}
    median["detector"] = {key: statistics.median(p["detector"][key] for p in logged) for key in logged[0]["detector"]}
    return median


def _summary(rounds: list[dict], side: str) -> dict:
    starts = lambda key: [r[side][key] for r in rounds]  # noqa: E731
    med = lambda key, field: statistics.median(s[field] for s in starts(key))  # noqa: E731
    summary = {"empty_s": med("empty_cache", "seconds_to_ready"), "filled_s": med("filled_cache", "seconds_to_ready"),
               "rss_mb": med("filled_cache", "rss_mb")}
    summary["filled_over_empty"] = round(summary["filled_s"] / summary["empty_s"], 3)
    summary["phases"] = {"empty_cache": _median_phases(starts("empty_cache")),
                         "filled_cache": _median_phases(starts("filled_cache"))}
    if "shadow_cached" in rounds[0][side]:
        summary.update({"with_shadow_ready_s": med("shadow_cached", "seconds_to_ready"),
                        "with_shadow_loaded_s": med("shadow_cached", "seconds_to_shadow_loaded"),
                        "rss_mb_with_shadow": med("shadow_cached", "rss_mb_with_shadow")})
    return summary


def _line(label: str, summary: dict, rounds: int) -> str:
    text = (f"{label}: YOLO26s INT8 process start -> /readyz 200 (median of {rounds}): empty cache "
            f"{summary['empty_s']} s, filled {summary['filled_s']} s ({summary['filled_over_empty']}x); "
            f"RSS {summary['rss_mb']} MB")
    if "with_shadow_ready_s" in summary:
        text += (f"; with a YOLO26s FP32 shadow: ready {summary['with_shadow_ready_s']} s, shadow loaded "
                 f"{summary['with_shadow_loaded_s']} s, RSS {summary['rss_mb_with_shadow']} MB")
    for cache, phases in summary["phases"].items():
        if phases:
            text += f"\n  {cache} phases (median, s): {json.dumps(phases)}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default=os.environ.get("DEER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"))
    parser.add_argument("--baseline", type=Path,
                        help="another checkout (e.g. `git worktree add DIR OLD_COMMIT`) started in the same rounds")
    parser.add_argument("--no-shadow", action="store_true", help="skip the starts with a shadow model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    built = rect_speed.models(["yolo26s"])["yolo26s"]
    model, shadow = built["int8"], built["fp32"]
    host = host_line(speed_index())
    sides = {"current": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    rounds = []
    for i in range(args.rounds):
        order = list(sides) if i % 2 == 0 else list(sides)[::-1]  # alternate who starts first
        results: dict[str, dict] = {side: {} for side in sides}
        with tempfile.TemporaryDirectory(prefix="deer-cold-") as caches:
            for kind in ("empty_cache", "filled_cache"):  # a cache dir per side: each fills its own
                for side in order:
                    results[side][kind] = start(model, f"{caches}/{side}", args.redis, None, sides[side])
            if not args.no_shadow:
                cache = f"{caches}/current"
                results["current"]["shadow_first"] = start(model, cache, args.redis, shadow)  # compiles the shadow
                results["current"]["shadow_cached"] = start(model, cache, args.redis, shadow)
        rounds.append(results)
        brief = {side: {kind: r["seconds_to_ready"] for kind, r in got.items()} for side, got in results.items()}
        print(f"round {i}: seconds to ready {json.dumps(brief)}", file=sys.stderr, flush=True)
    summaries = {side: _summary(rounds, side) for side in sides}
    report = {"host": host, "model": str(model), "shadow_model": None if args.no_shadow else str(shadow),
              "rounds": rounds, "median": summaries["current"],
              "cached_within_half": summaries["current"]["filled_over_empty"] <= 0.5}
    if args.baseline:
        commit = subprocess.run(["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        report["baseline"] = {"checkout": str(args.baseline), "commit": commit, "median": summaries["baseline"]}
    print(host, file=sys.stderr)
    for side, summary in summaries.items():
        print(_line(side if side == "current" else f"baseline {report['baseline']['commit']}", summary, args.rounds),
              file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
