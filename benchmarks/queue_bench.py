#!/usr/bin/env python3
"""Issue-3 benchmark (not a test): the queue's cost on top of the detector, and backlog throughput.

One run, against an embedded redis-server (or --redis URL), prints:
  1. one job in flight: end-to-end latency (enqueue -> result on the channel) p50 vs the worker's
     own service time p50 for the same jobs (target: <= 2 ms apart), and where the gap goes: the
     producer's enqueue call, queue wait (enqueued_at -> the worker holds the job), the worker's
     other time (RQ bookkeeping, snapshot fetch, result message), delivery (worker -> subscriber);
     and the transport floor: the same Redis hops and bytes with raw redis-py, no RQ, no decode
     (each hop to a process that idled through an inference costs a wake-up on this host);
  2. backlog throughput in jobs/s (1920x1080 JPEGs, decode included) for --workers 1/2 x --batch 1/4,
     against the runtime's limit: benchmark_app -hint throughput FPS of the same IR (target >= 0.85x).
Inference is pinned to f32 (the worker's default). Timings are noisy on a shared host: compare the
figures of one run with each other.

    .venv/bin/python benchmarks/queue_bench.py [--model DIR] [--jobs 200] [--json FILE]

The transport floor also times a PING to Redis back to back and after the client idled for the service
time (`transport_floor.ping_ms`): what each hop to a process that slept through an inference costs.

--snapshot-kinds key,b64 measures instead how the snapshot travels: under a Redis key (the producer's
default) or inline as base64 in the job (RQ re-serializes and compresses a job's data each time it
saves the job); per kind one job in flight (e2e and service p50) and a one-worker batch-4 backlog
(jobs/s), the kinds alternated --rounds times in one run.

    .venv/bin/python benchmarks/queue_bench.py --snapshot-kinds key,b64 [--rounds 2] [--json FILE]

--consumer-loop (issue 14: overlap, priority, publish-once) measures instead, in one interleaved run:
  limits, as formulas: T = benchmark_app -hint throughput FPS (f32) on the worker's compiled graph;
  the decode-counting limit L = min(T, cores / decode-seconds-per-snapshot) on the same JPEG;
  the shared-core bound B = 1 / (1/T + (decode + per_job) / cores): decode and the loop's other work
  per job run on the same cores as inference, so no worker on this host gets far beyond B. per_job is
  measured, not assumed: the same consumer loop (DeerWorker, batch 4, take-ahead on, one process)
  serves a backlog of the same JPEG with Detector.run_prepared replaced by a stub that returns empty
  detections (no inference; decode and letterbox are real), and the CPU seconds of that process and
  of redis-server over the loop, divided by the jobs, are decode + per_job (`noop_cpu_ms`; per_job =
  that minus the decode median measured on the same JPEG). It leaves out the postprocess of real
  detections (a few 0.1 ms), and T is measured at batch 1 while backlogs run batch 4: B is an estimate,
  not a hard ceiling (two one-thread workers, with no hand-off between threads, came out up to 1.06 x B);
  backlog throughput of one worker (target >= 0.9 x T) and two (>= 0.95 x T) for YOLO26s INT8 at 1080p
  and 640x360 (built by compare_ultralytics.build_yaml_model into .cache/bench-models if absent), the
  demo model vs L (>= 0.9 x L), each reported as x T, x L and x B; one worker of the code at --before
  (default: the loop before issue 14) on the same three for comparison;
  one-in-flight service p50 (demo INT8, batch 4 configured), before (--before, from git archive) vs after, alternated;
  priority: a high-priority snapshot's wait, in batches, over 100 of them against a standing backlog.
  The JSON records the host (`host`: worker.evaluation.host.host_line with its speed index), printed first.

    .venv/bin/python benchmarks/queue_bench.py --consumer-loop [--before COMMIT] [--json FILE]

--concurrent-rss: the worker process's RSS once its detector is built (batch 4), with and without the
two-stream models of the backlog path, for YOLO26s INT8 (static) and the demo model folder (dynamic, 3 shapes).

    .venv/bin/python benchmarks/queue_bench.py --concurrent-rss [--rounds 2] [--json FILE]
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rq import Queue  # noqa: E402
from rq.worker import Worker  # noqa: E402

from worker.tools.bench import measure_throughput  # noqa: E402
from worker.jobqueue.connections import SERIALIZER, connect  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402
from worker.tools.embedded import embedded_redis  # noqa: E402
from worker.inference.runtime import CompileOptions, compile_model, load_spec  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402

SNAPSHOT = ROOT / "models" / "demo" / "samples" / "day_1920x1080_deer.jpg"
QUEUE = "bench-snapshots"
# How a job carries its snapshot: enqueue_snapshot's options for each kind (--snapshot-kinds).
SNAPSHOT_KINDS = {"key": {}, "b64": {"inline": True}}


def worker_env(url: str, model: str, batch: str, root: Path = ROOT) -> dict[str, str]:
    """The environment every worker of this benchmark runs with (the code under `root`)."""
    return dict(os.environ, DEER_WORKER_REDIS_URL=url, DEER_WORKER_QUEUE=QUEUE, DEER_WORKER_MODEL=model,
                DEER_WORKER_METRICS_PORT="0", DEER_WORKER_MAX_AGE="3600", DEER_WORKER_BATCH=batch,
                PYTHONPATH=str(root))


def start_pool(url: str, model: str, workers: int, batch: str, root: Path = ROOT) -> subprocess.Popen:
    """A pool of the worker code under `root` (another checkout runs that version's worker)."""
    env = worker_env(url, model, batch, root)
    proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "run", "--workers",
                             str(workers)], cwd=root, env=env, start_new_session=True)
    conn = connect(url)
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    while Worker.count(connection=conn, queue=queue) < workers:
        if proc.poll() is not None:
            raise SystemExit(f"pool exited with {proc.returncode}")
        time.sleep(0.1)
    return proc


def stop_pool(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)


def _subscribed(url: str, channel: str):
    """A connection for enqueueing, and a subscription to the channel results come back on."""
    conn = connect(url)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    return conn, pubsub


def _result_of(pubsub, job_id: str) -> dict:
    """The next message on the channel for job_id (others are skipped)."""
    while True:
        raw = pubsub.get_message(timeout=10)
        if raw and (message := json.loads(raw["data"]))["job_id"] == job_id:
            return message


def one_in_flight(url: str, model: str, n: int, root: Path = ROOT, snapshot: Path = SNAPSHOT,
                  kind: str = "key", batch: str = "1") -> dict:
    proc = start_pool(url, model, 1, batch, root)
    conn, pubsub = _subscribed(url, "deer:results")
    data = snapshot.read_bytes()
    rows = []
    try:
        for i in range(n + 5):
            start_wall, start = time.time(), time.perf_counter()
            job = enqueue_snapshot(conn, data, "bench", queue=QUEUE, **SNAPSHOT_KINDS[kind])  # default: under a key
            enqueued = time.perf_counter()
            message = _result_of(pubsub, job.id)
            elapsed, received_wall = time.perf_counter() - start, time.time()
            if i >= 5:  # the first jobs warm caches and connections
                timings = message["timings_ms"]
                rows.append({"e2e": elapsed * 1e3, "service": timings["total"], "enqueue": (enqueued - start) * 1e3,
                             "queue_wait": timings["queue_wait"],
                             # same host, same clock: from the worker stamping the message to our receipt
                             "delivery": (received_wall - message["finished_at"]) * 1e3,
                             "worker_other": (message["finished_at"] - start_wall) * 1e3 - timings["queue_wait"]
                             - timings["total"]})
    finally:
        stop_pool(proc)
    p50 = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {"e2e_p50_ms": p50["e2e"], "service_p50_ms": p50["service"], "gap_ms": p50["e2e"] - p50["service"],
            "jobs": n, "breakdown_p50_ms": {k: round(v, 2) for k, v in p50.items() if k not in ("e2e", "service")}}


def floor_consumer(url: str) -> None:
    """The same hops as a deer job with nothing else: BLMOVE, one pipeline for the job hash and its
    snapshot, idle for the given service time (as during inference), PUBLISH a small result."""
    conn = connect(url)
    while True:
        job_id = conn.blmove("floor:q", "floor:q:taken", 30).decode()
        if job_id == "stop":
            return
        with conn.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"floor:job:{job_id}")
            pipe.get(f"floor:snap:{job_id}")
            job, snapshot = pipe.execute()
        started = time.perf_counter()
        time.sleep(float(job[b"service_s"]))
        idle = time.perf_counter() - started
        conn.publish("floor:results", json.dumps({"job_id": job_id, "bytes": len(snapshot), "idle_ms": idle * 1e3}))
        conn.lrem("floor:q:taken", 1, job_id)


def transport_floor(url: str, n: int, service_ms: float) -> dict:
    """e2e minus the consumer's idle time for the bare hops (no RQ, no decode): the least any
    Redis-list queue with the snapshot in Redis can add on this host."""
    consumer = subprocess.Popen([sys.executable, __file__, "--floor-consumer", url])
    conn, pubsub = _subscribed(url, "floor:results")
    data = SNAPSHOT.read_bytes()
    gaps = []
    try:
        for i in range(n + 5):
            job_id = f"j{i}"
            start = time.perf_counter()
            with conn.pipeline() as pipe:  # one MULTI, as enqueue_snapshot sends
                pipe.hset(f"floor:job:{job_id}", mapping={"service_s": service_ms / 1e3, "camera": "bench"})
                pipe.set(f"floor:snap:{job_id}", data)
                pipe.lpush("floor:q", job_id)
                pipe.execute()
            message = _result_of(pubsub, job_id)
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= 5:
                gaps.append(elapsed - message["idle_ms"])
    finally:
        conn.lpush("floor:q", "stop")
        consumer.wait(30)
        conn.delete(*conn.keys("floor:*"))
    return {"floor_gap_p50_ms": statistics.median(gaps), "jobs": n}


def ping_times(url: str, n: int, idle_ms: float) -> dict:
    """PING round trip p50, back to back and after the client idled `idle_ms` (as a worker idles through
    an inference): the wake-ups that make the transport floor more than its bytes."""
    conn = connect(url)
    conn.ping()
    back_to_back, after_idle = [], []
    for _ in range(n):
        start = time.perf_counter()
        conn.ping()
        back_to_back.append((time.perf_counter() - start) * 1e3)
    for _ in range(n):
        time.sleep(idle_ms / 1e3)
        start = time.perf_counter()
        conn.ping()
        after_idle.append((time.perf_counter() - start) * 1e3)
    return {"back_to_back_p50": statistics.median(back_to_back), "after_idle_p50": statistics.median(after_idle),
            "idle_ms": idle_ms, "pings": n}


def snapshot_kinds(url: str, args) -> dict:
    """One job in flight and a one-worker batch-4 backlog per kind, the kinds alternated each round."""
    kinds = [k.strip() for k in args.snapshot_kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(SNAPSHOT_KINDS):
        raise SystemExit(f"--snapshot-kinds: expected some of {', '.join(SNAPSHOT_KINDS)}, got {args.snapshot_kinds!r}")
    runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            lat = one_in_flight(url, args.model, args.latency_jobs, kind=kind)
            r = backlog(url, args.model, 1, "4", args.jobs, kind=kind)
            runs[kind].append({"e2e_p50_ms": lat["e2e_p50_ms"], "service_p50_ms": lat["service_p50_ms"],
                               "jobs_per_s": r["jobs_per_s"], "mean_batch": r["mean_batch"], "ok": r["ok"]})
            print(f"{kind}: one in flight e2e p50 {lat['e2e_p50_ms']:.2f} ms, service p50 {lat['service_p50_ms']:.2f} ms; "
                  f"backlog (1 worker, batch 4) {r['jobs_per_s']:.1f} jobs/s ({r['ok']} ok)", flush=True)
    median = {kind: {key: statistics.median(r[key] for r in rows) for key in ("e2e_p50_ms", "service_p50_ms", "jobs_per_s")}
              for kind, rows in runs.items()}
    out = {"kinds": kinds, "rounds": args.rounds, "runs": runs, "median": median}
    if {"key", "b64"} <= set(kinds):
        out["b64_minus_key_e2e_ms"] = median["b64"]["e2e_p50_ms"] - median["key"]["e2e_p50_ms"]
        out["b64_vs_key_jobs_per_s"] = median["b64"]["jobs_per_s"] / median["key"]["jobs_per_s"]
        print(f"inline base64 vs a key (medians of {args.rounds} rounds): e2e {out['b64_minus_key_e2e_ms']:+.2f} ms a job, "
              f"backlog x{out['b64_vs_key_jobs_per_s']:.2f}", flush=True)
    return out


def backlog(url: str, model: str, workers: int, batch: str, n: int, root: Path = ROOT,
            snapshot: Path = SNAPSHOT, kind: str = "key") -> dict:
    conn = connect(url)
    conn.flushdb()  # registries must count this run's jobs only
    proc = start_pool(url, model, workers, batch, root)
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    data = snapshot.read_bytes()
    try:
        # Enqueue the whole backlog before timing starts (the first result): ~1 ms per job.
        jobs = [enqueue_snapshot(conn, data, "bench", queue=QUEUE, **SNAPSHOT_KINDS[kind]) for _ in range(n)]
        while True:
            finished = queue.finished_job_registry.count + queue.failed_job_registry.count
            if finished >= n:
                break
            time.sleep(0.05)
        stream = conn.xrange("deer:results:stream")
        messages = [json.loads(f[b"result"]) for _, f in stream]
        ids = {j.id for j in jobs}
        mine = [m for m in messages if m["job_id"] in ids]
        ends = sorted(m["finished_at"] for m in mine)
        batches = [m["batch_size"] for m in mine]
    finally:
        stop_pool(proc)
        conn.flushdb()
    # from the first to the last result: excludes pool start-up, includes every decode
    rate = (len(ends) - 1) / (ends[-1] - ends[0])
    return {"workers": workers, "batch": batch, "jobs_per_s": rate, "ok": sum(m["status"] == "ok" for m in mine),
            "mean_batch": float(np.mean(batches))}


def runtime_limit(model: str, seconds: float) -> dict:
    """The inference-only FPS ceiling: OpenVINO's own benchmark_app -hint throughput (f32 pinned) when
    the environment has it, and our equivalent (worker.tools.bench) on the worker's compiled graph; the
    higher of the two is the limit, so the ratio never flatters the queue."""
    spec, ov_model = load_spec(model)
    runner = compile_model(ov_model, spec, 1, CompileOptions(precision="f32", hint="THROUGHPUT"))
    tensor = np.random.default_rng(0).integers(0, 256, (1, *spec.imgsz, 3), dtype=np.uint8)
    limits = {"equivalent": measure_throughput(runner.compiled, tensor, seconds)["fps"]}
    del runner
    tool = Path(sys.executable).parent / "benchmark_app"
    if tool.exists():
        xml = next(Path(model).glob("*.xml"))
        out = subprocess.run([str(tool), "-m", str(xml), "-d", "CPU", "-hint", "throughput", "-t", str(int(seconds)),
                              "-infer_precision", "f32"], capture_output=True, text=True, timeout=300).stdout
        found = re.search(r"Throughput:\s+([\d.]+) FPS", out)
        if found:
            limits["benchmark_app"] = float(found.group(1))
    return {"fps": max(limits.values()), **limits}


# --- issue 14: the consumer loop ---------------------------------------------------------------------
BEFORE_OVERLAP = "2a2fbd5"  # the last commit whose consumer took a batch only after the previous one ended
SNAPSHOT_360 = ROOT / "models" / "demo" / "samples" / "day_640x360_deer.jpg"
DEMO_MODEL = ROOT / "models" / "demo" / "deer-yolo26n_int8_openvino_model"


def checkout(commit: str, into: Path) -> Path:
    """The tree of `commit` (git archive: the working checkout is left alone)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit, "worker", "configs"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def decode_seconds(snapshot: Path, n: int = 40) -> float:
    """Median seconds to decode the snapshot once, one thread, as the worker decodes it (full size, with
    the worker's process tuning: freed frame memory is reused, not returned and faulted in again)."""
    from worker.inference.build import tune_process
    from worker.inference.imagecodec import decode

    tune_process()

    data, times = snapshot.read_bytes(), []
    for _ in range(n + 3):
        start = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def noop_worker(url: str, model: str) -> None:
    """--noop-worker's child: the consumer loop, as a pool worker builds it, over the queued backlog with
    no inference (run_prepared returns empty detections); prints the CPU seconds of this process and of
    redis-server over the loop, and the jobs served, as one JSON line."""
    from worker.cameras import parse_camera_book
    from worker.config import default_config_path, load_config
    from worker.inference.build import build_detector, tune_process
    from worker.inference.detections import Detections
    from worker.inference.detector import DetectionResult
    from worker.jobqueue.consumer import DeerWorker

    tune_process()
    config = load_config(default_config_path(None))
    detector = build_detector(config)
    empty = Detections.empty(detector.spec.names)

    def no_inference(prepared) -> list:
        results = [None] * prepared.size
        for index, error in prepared.errors.items():
            results[index] = error
        for items in prepared.groups.values():
            for item in items:
                results[item.index] = DetectionResult(empty, item.timings, len(items), item.transform.original_width,
                                                      item.transform.original_height)
        return results

    detector.run_prepared = no_inference
    conn = connect(url)
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    jobs = queue.count
    consumer = DeerWorker([queue], connection=conn, detector=detector, cameras=parse_camera_book({}), config=config)
    redis_pid = int(conn.info("server")["process_id"])
    cpu, redis_cpu = time.process_time(), _cpu_seconds(redis_pid)
    consumer.work(burst=True, logging_level="WARNING")
    cpu, redis_cpu = time.process_time() - cpu, _cpu_seconds(redis_pid) - redis_cpu
    print(json.dumps({"jobs": jobs, "worker_cpu_s": cpu, "redis_cpu_s": redis_cpu}))


def noop_cpu_per_job(url: str, model: str, snapshot: Path, n: int = 200) -> dict:
    """CPU seconds per job of the consumer loop without inference (decode, letterbox, RQ, Redis, result)."""
    conn = connect(url)
    conn.flushdb()
    data = snapshot.read_bytes()
    for _ in range(n):
        enqueue_snapshot(conn, data, "bench", queue=QUEUE)
    try:
        out = subprocess.run([sys.executable, __file__, "--noop-worker", url, model], env=worker_env(url, model, "4"),
                             cwd=ROOT, capture_output=True, text=True, check=True, timeout=600).stdout
        ok = sum(json.loads(f[b"result"])["status"] == "ok" for _, f in conn.xrange("deer:results:stream"))
    finally:
        conn.flushdb()
    run = json.loads(out.strip().splitlines()[-1])
    return {**run, "ok": ok, "noop_cpu_ms": (run["worker_cpu_s"] + run["redis_cpu_s"]) / run["jobs"] * 1e3}


def limits_for(url: str, model: str, snapshot: Path, seconds: float) -> dict:
    """T = the runtime's -hint throughput FPS (f32); L = min(T, cores / decode-seconds-per-snapshot);
    B = 1 / (1/T + (decode + per_job) / cores), decode + per_job being the no-inference loop's CPU a job."""
    runtime = runtime_limit(model, seconds)
    cores = len(os.sched_getaffinity(0))
    per_decode = decode_seconds(snapshot)
    noop = noop_cpu_per_job(url, model, snapshot)
    return {"T_fps": runtime["fps"], "runtime": runtime, "cores": cores, "decode_ms": per_decode * 1e3,
            "decode_limit_fps": cores / per_decode, "L_fps": min(runtime["fps"], cores / per_decode),
            "noop": noop, "per_job_ms": noop["noop_cpu_ms"] - per_decode * 1e3,
            "B_fps": 1 / (1 / runtime["fps"] + noop["noop_cpu_ms"] / 1e3 / cores)}



def priority_wait(url: str, model: str, snapshot: Path, samples: int, standing: int = 16) -> dict:
    """A standing backlog of interval snapshots (topped up by a feeder thread) and `samples` high-priority
    snapshots enqueued one at a time; each one's wait (enqueue -> taken, from its result's queue_wait)
    in batch periods of the same run (mean batch size / jobs per second)."""
    import threading

    conn = connect(url)
    conn.flushdb()
    proc = start_pool(url, model, 1, "4")
    queue = Queue(QUEUE, connection=conn, serializer=SERIALIZER)
    data, stop = snapshot.read_bytes(), threading.Event()

    def feed() -> None:
        feeder = connect(url)
        while not stop.is_set():
            if feeder.llen(queue.key) < standing:
                enqueue_snapshot(feeder, data, "interval", queue=QUEUE)
            else:
                time.sleep(0.002)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    high = []
    try:
        while conn.llen(queue.key) < standing:
            time.sleep(0.01)
        time.sleep(2)  # the worker settles into the backlog
        rng = np.random.default_rng(0)
        for _ in range(samples):
            time.sleep(float(rng.uniform(0.05, 0.3)))  # arrivals at random points of a batch
            high.append(enqueue_snapshot(conn, data, "door", queue=QUEUE, priority="high").id)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = {m for m in (json.loads(f[b"result"])["job_id"] for _, f in conn.xrange("deer:results:stream"))}
            if done >= set(high):
                break
            time.sleep(0.1)
        stop.set()
        thread.join(10)
        messages = [json.loads(f[b"result"]) for _, f in conn.xrange("deer:results:stream")]
    finally:
        stop.set()
        stop_pool(proc)
        conn.flushdb()
    wanted = set(high)
    interval = [m for m in messages if m["job_id"] not in wanted and m["status"] == "ok"]
    ends = sorted(m["finished_at"] for m in interval)
    rate = (len(ends) - 1) / (ends[-1] - ends[0])
    mean_batch = float(np.mean([m["batch_size"] for m in messages]))
    period_ms = mean_batch / rate * 1e3
    waits = np.array([m["timings_ms"]["queue_wait"] for m in messages if m["job_id"] in wanted])
    in_batches = waits / period_ms
    return {"samples": len(waits), "batch_period_ms": period_ms, "mean_batch": mean_batch, "jobs_per_s": rate,
            "wait_ms": {"p50": float(np.median(waits)), "p99": float(np.percentile(waits, 99)), "max": float(waits.max())},
            "wait_batches": {"p50": float(np.median(in_batches)), "p99": float(np.percentile(in_batches, 99)),
                             "max": float(in_batches.max())},
            "over_two_batches": int((in_batches > 2).sum())}


def detector_rss(model: str, concurrent: bool) -> dict:
    """VmRSS (MiB) of a fresh process once it built the worker's detector (batch 4, f32, the default
    shapes), with or without the two-stream models a backlog's batches run on (Detector(concurrent=))."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from worker.inference.build import tune_process\n"
            "from worker.inference.detector import Detector\n"
            "from worker.inference.runtime import CompileOptions\n"
            "from worker.tools.bench import memory_mb\n"
            f"tune_process(); d = Detector({model!r}, batch='4', options=CompileOptions(precision='f32'), "
            f"concurrent={concurrent!r})\n"
            "print(memory_mb()['rss'], len(d.runners), len(d.concurrent))\n")
    rss, runners, concurrent_runners = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                      check=True, cwd=ROOT).stdout.split()[-3:]
    return {"rss_mb": float(rss), "one_stream_models": int(runners), "two_stream_models": int(concurrent_runners)}


def concurrent_rss(args) -> dict:
    """--concurrent-rss: what the two-stream models cost in memory, alternated over --rounds."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare_ultralytics import build_yaml_model

    out: dict = {"host": host_line(), "rows": []}
    print(out["host"], flush=True)
    models = {"yolo26s_int8 (static 640)": str(build_yaml_model("yolo26s")[1]),
              "demo model folder (dynamic, 3 shapes)": str(ROOT / "models" / "demo")}
    for _ in range(args.rounds):
        for name, model in models.items():
            for concurrent in (False, True):
                row = {"model": name, "concurrent": concurrent, **detector_rss(model, concurrent)}
                out["rows"].append(row)
                print(f"{name}: concurrent {concurrent}: RSS {row['rss_mb']:.0f} MiB ({row['one_stream_models']} "
                      f"one-stream + {row['two_stream_models']} two-stream compiled models)", flush=True)
    return out


def consumer_loop(url: str, args) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from compare_ultralytics import build_yaml_model

    out: dict = {"host": host_line(speed_index()), "precision": "f32", "before_commit": args.before}
    print(out["host"], flush=True)
    _, yolo26s_int8 = build_yaml_model("yolo26s")
    before = checkout(args.before, Path(args.before_dir) / args.before)  # one tree per commit: tar -x never deletes
    runs = [("yolo26s_int8", str(yolo26s_int8), SNAPSHOT, "T_fps"), ("yolo26s_int8", str(yolo26s_int8), SNAPSHOT_360, "T_fps"),
            ("demo_int8", str(DEMO_MODEL), SNAPSHOT, "L_fps")]
    out["limits"] = {}
    for name, model, snapshot, _ in runs:
        out["limits"][f"{name}@{snapshot.name}"] = lim = limits_for(url, model, snapshot, args.limit_seconds)
        print(f"limits {name} {snapshot.name}: T {lim['T_fps']:.1f} FPS, decode {lim['decode_ms']:.2f} ms x "
              f"{lim['cores']} cores -> {lim['decode_limit_fps']:.1f}/s, L = min = {lim['L_fps']:.1f}; loop without "
              f"inference {lim['noop']['noop_cpu_ms']:.2f} CPU ms a job (decode {lim['decode_ms']:.2f} + other "
              f"{lim['per_job_ms']:.2f}) -> B = 1/(1/T + {lim['noop']['noop_cpu_ms']:.2f} ms/{lim['cores']}) = "
              f"{lim['B_fps']:.1f}", flush=True)
    # One-in-flight service p50, before and after, alternated so drift hits both alike; batch 4 as in the
    # backlogs, so the worker holds every model a backlog uses while it serves one job at a time.
    out["one_in_flight"] = {"batch": "4", "before": [], "after": []}
    for _ in range(args.rounds):
        for label, root in (("before", before), ("after", ROOT)):
            r = one_in_flight(url, str(DEMO_MODEL), args.latency_jobs, root, batch="4")
            out["one_in_flight"][label].append(r)
            print(f"one in flight ({label}): service p50 {r['service_p50_ms']:.2f} ms, e2e p50 {r['e2e_p50_ms']:.2f} ms",
                  flush=True)
    # Backlogs, interleaved: the workers' count and the models alternate within each round.
    out["backlog"] = []
    # Each model and snapshot: the code at --before and this checkout, 1 worker then 2, one after another.
    plan = [(name, model, snapshot, key, workers, root) for name, model, snapshot, key in runs
            for workers, root in ((1, before), (1, ROOT), (2, ROOT))]
    for _ in range(args.rounds):
        for name, model, snapshot, key, workers, root in plan:
            lim = out["limits"][f"{name}@{snapshot.name}"]
            jobs = max(args.min_jobs, int(lim[key] * args.backlog_seconds))
            r = backlog(url, model, workers, "4", jobs, root, snapshot)
            rate = r["jobs_per_s"]
            r.update(model=name, snapshot=snapshot.name, code="before" if root != ROOT else "after",
                     limit=key, vs_limit=rate / lim[key], vs_T=rate / lim["T_fps"], vs_L=rate / lim["L_fps"],
                     vs_B=rate / lim["B_fps"])
            out["backlog"].append(r)
            target = 0.9 if workers == 1 or key == "L_fps" else 0.95
            print(f"backlog {name} {snapshot.name} workers {workers} ({r['code']}): {rate:.1f} jobs/s, "
                  f"mean batch {r['mean_batch']:.2f} = {r['vs_T']:.2f} x T, {r['vs_L']:.2f} x L, {r['vs_B']:.2f} x B "
                  f"[target >= {target} x {key[0]}{'' if r['code'] == 'after' else ', for comparison'}]", flush=True)
    if not args.priority_samples:
        return out
    priority_model = {"demo": str(DEMO_MODEL), "yolo26s": str(yolo26s_int8)}[args.priority_model]
    out["priority"] = pr = priority_wait(url, priority_model, SNAPSHOT_360, args.priority_samples)
    pr["model"] = args.priority_model
    print(f"priority ({args.priority_model}, 640x360, 1 worker, batch 4, standing backlog): wait p50 "
          f"{pr['wait_batches']['p50']:.2f}, p99 {pr['wait_batches']['p99']:.2f}, max {pr['wait_batches']['max']:.2f} "
          f"batches (period {pr['batch_period_ms']:.1f} ms); {pr['over_two_batches']} of {pr['samples']} over two",
          flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/demo/deer-yolo26n_int8_openvino_model"))
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--latency-jobs", type=int, default=50)
    ap.add_argument("--redis", help="Redis URL (default: an embedded redis-server)")
    ap.add_argument("--json")
    ap.add_argument("--floor-consumer", metavar="URL", help=argparse.SUPPRESS)  # transport_floor's child
    ap.add_argument("--noop-worker", nargs=2, metavar=("URL", "MODEL"), help=argparse.SUPPRESS)  # noop_cpu_per_job's
    ap.add_argument("--before", default=BEFORE_OVERLAP, help="--consumer-loop: the commit the 'before' rows run")
    ap.add_argument("--concurrent-rss", action="store_true",
                    help="the worker's RSS with and without the two-stream models, per model (alternated over --rounds)")
    ap.add_argument("--consumer-loop", action="store_true", help="issue 14's figures instead (see above)")
    ap.add_argument("--snapshot-kinds", metavar="KINDS", help="key,b64: how jobs carry the snapshot, instead (see above)")
    ap.add_argument("--rounds", type=int, default=1, help="--consumer-loop, --snapshot-kinds: interleaved rounds")
    ap.add_argument("--backlog-seconds", type=float, default=10, help="--consumer-loop: backlog length at the limit")
    ap.add_argument("--limit-seconds", type=float, default=10, help="--consumer-loop: seconds per limit measurement")
    ap.add_argument("--priority-samples", type=int, default=100, help="--consumer-loop: 0 leaves priority out")
    ap.add_argument("--priority-model", choices=["demo", "yolo26s"], default="yolo26s")
    ap.add_argument("--min-jobs", type=int, default=40, help="--consumer-loop: fewest jobs per backlog")
    ap.add_argument("--before-dir", default="/tmp/deer-queue-bench-before", help="where the old worker is unpacked")
    args = ap.parse_args()
    if args.floor_consumer:
        floor_consumer(args.floor_consumer)
        return 0
    if args.noop_worker:
        noop_worker(*args.noop_worker)
        return 0
    if args.concurrent_rss:
        out = concurrent_rss(args)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    if args.consumer_loop:
        with embedded_redis("redis-server") as (url, _):
            out = consumer_loop(url, args)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    out: dict = {"host": host_line(speed_index()), "model": args.model, "snapshot": SNAPSHOT.name, "precision": "f32"}
    print(out["host"], flush=True)
    if args.redis:
        return _run(args, args.redis, out)
    with embedded_redis("redis-server") as (url, _):
        return _run(args, url, out)


def _run(args, url: str, out: dict) -> int:
    if args.snapshot_kinds:
        out["snapshot_kinds"] = snapshot_kinds(url, args)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))
        return 0
    lat = one_in_flight(url, args.model, args.latency_jobs)
    out["one_in_flight"] = lat
    print(f"one job in flight: e2e p50 {lat['e2e_p50_ms']:.2f} ms, service p50 {lat['service_p50_ms']:.2f} ms, "
          f"gap {lat['gap_ms']:.2f} ms [{'ok' if lat['gap_ms'] <= 2 else 'MISS'} <= 2 ms]; gap p50s: "
          + ", ".join(f"{k} {v:.2f}" for k, v in lat["breakdown_p50_ms"].items()), flush=True)
    floor = transport_floor(url, args.latency_jobs, lat["service_p50_ms"])
    out["transport_floor"] = floor
    print(f"transport floor (same hops and bytes, raw redis-py, no RQ, consumer idle for the service time): "
          f"{floor['floor_gap_p50_ms']:.2f} ms; the queue adds {lat['gap_ms'] - floor['floor_gap_p50_ms']:.2f} ms "
          f"over it", flush=True)
    floor["ping_ms"] = ping = ping_times(url, 200, lat["service_p50_ms"])
    print(f"PING p50: {ping['back_to_back_p50']:.3f} ms back to back, {ping['after_idle_p50']:.3f} ms after "
          f"{ping['idle_ms']:.1f} ms idle (the service time)", flush=True)
    limits = runtime_limit(args.model, 10)
    limit = limits["fps"]
    out["runtime_throughput_fps"] = limits
    print(f"runtime limit (-hint throughput, f32, inference only): {limit:.1f} FPS ("
          + ", ".join(f"{k} {v:.1f}" for k, v in limits.items() if k != "fps") + ")", flush=True)
    out["backlog"] = []
    for workers, batch in ((1, "1"), (1, "4"), (2, "1"), (2, "4")):
        r = backlog(url, args.model, workers, batch, args.jobs)
        r["vs_limit"] = r["jobs_per_s"] / limit
        out["backlog"].append(r)
        print(f"backlog --workers {workers} --batch {batch}: {r['jobs_per_s']:.1f} jobs/s "
              f"(mean batch {r['mean_batch']:.2f}, {r['ok']} ok) = {r['vs_limit']:.2f}x the limit "
              f"[{'ok' if r['vs_limit'] >= 0.85 else 'MISS'} >= 0.85x]", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
