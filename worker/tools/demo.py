"""`deer-worker demo`: the whole path on one machine with nothing to set up.

Starts an embedded Redis (or uses --redis), a worker pool, enqueues the shipped sample snapshots,
prints each result as it arrives on the results channel and a per-stage latency table.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rq.worker import Worker

from worker.config import WorkerConfig, redact_url, resolve_path
from worker.errors import RedisUnavailableError, WorkerStartError
from worker.jobqueue.connections import SERIALIZER, connect, ping
from worker.tools.embedded import embedded_redis
from worker.serve.pool import WorkerPool
from worker.jobqueue.producer import enqueue_snapshot

log = logging.getLogger(__name__)
SAMPLES_DIR = "models/demo/samples"
DEMO_ZONES = "models/demo/zones.yaml"  # the demo model's threshold (0.25), not a production camera file
DEMO_MODEL = "models/demo"  # the package: MODEL_CARD.json's serve (raw head + NMS; INT8 since v3), whatever the config names
STAGES = ("queue_wait", "decode", "preprocess", "infer", "postprocess", "total", "end_to_end")


def sample_images() -> list[Path]:
    folder = resolve_path(SAMPLES_DIR)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def latency_table(messages: list[dict]) -> str:
    rows = [f"{'stage':<12} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    for stage in STAGES:
        values = [m["timings_ms"][stage] for m in messages if stage in m.get("timings_ms", {})]
        if values:
            p50, p95 = np.percentile(values, [50, 95])
            rows.append(f"{stage:<12} {p50:8.2f} {p95:8.2f} {max(values):8.2f}")
    return "\n".join(rows)


def wait_for_workers(connection, queue: str, pool: WorkerPool, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Worker.count(connection=connection, queue=_queue(connection, queue)) < count:
        for child in pool.children.values():
            if child.process.poll() is not None:
                raise WorkerStartError(f"worker {child.index} exited with {child.process.returncode} while starting; "
                                       "the lines above say why (add -v for the workers' logs)")
        if time.monotonic() > deadline:
            raise WorkerStartError(f"workers did not become ready within {timeout:.0f} s (add -v for their logs)")
        time.sleep(0.1)


def _queue(connection, name: str):
    from rq import Queue

    return Queue(name, connection=connection, serializer=SERIALIZER)


def run_demo(config: WorkerConfig, config_path: str | None, *, redis_url: str | None, workers: int,
             images: list[Path] | None, repeat: int, embedded: str = "auto", timeout: float = 180.0,
             log_level: str = "WARNING", zones: str = DEMO_ZONES, json_lines: bool = False) -> int:
    """json_lines: each result message as a JSON line on stdout, the rest (tables, summary) on stderr."""
    images = images or sample_images()
    config = replace(config, zones=zones)
    if redis_url:
        return _demo(config, config_path, redis_url, "given", workers, images, repeat, timeout, log_level, json_lines)
    with embedded_redis(embedded) as (url, kind):
        return _demo(config, config_path, url, kind, workers, images, repeat, timeout, log_level, json_lines)


def _demo(config, config_path, url, kind, workers, images, repeat, timeout, log_level, json_lines) -> int:
    human = sys.stderr if json_lines else sys.stdout
    config = replace(config, redis_url=url)
    connection = connect(url)
    if not ping(connection):  # before any worker starts, so a wrong --redis is one line, not a stuck demo
        raise RedisUnavailableError(f"{redact_url(url)} does not answer: start Redis, fix --redis, "
                                    "or leave --redis out for an embedded one")
    print(f"demo: Redis {url} ({kind}), {workers} worker(s), model {config.model}, precision {config.precision}",
          file=human)
    pubsub = connection.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(config.results_channel)
    # The workers read the config file again: --model and --precision reach them only as overrides.
    pool = WorkerPool(config, config_path, {"redis_url": url, "metrics_port": 0, "zones": config.zones,
                                            "model": config.model, "precision": config.precision}, workers,
                      log_level=log_level)
    pool.start()
    try:
        wait_for_workers(connection, config.queue, pool, workers, timeout)
        pending: dict[str, tuple[Path, float]] = {}
        for round_ in range(repeat):
            for image in images:
                job = enqueue_snapshot(connection, image, f"demo-{image.stem.split('_')[0]}", queue=config.queue)
                pending[job.id] = (image, time.time())
                if repeat > 1:
                    time.sleep(0.05)  # a camera-like trickle, so latency is service time, not backlog
        messages = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            raw = pubsub.get_message(timeout=1.0)
            if raw is None:
                continue
            message = json.loads(raw["data"])
            if message["job_id"] not in pending:
                continue
            image, sent = pending.pop(message["job_id"])
            message["timings_ms"]["end_to_end"] = round((time.time() - sent) * 1e3, 3)
            messages.append(message)
            if json_lines:
                print(json.dumps({"file": str(image), **message}), flush=True)
            else:
                _print_result(image, message)
        print(file=human)
        print(latency_table([m for m in messages if m["status"] == "ok"]), file=human)
        failed = [m for m in messages if m["status"] != "ok"]
        if pending or failed:
            print(f"demo: {len(pending)} job(s) without a result, {len(failed)} not ok", file=human)
            return 1
        deer = sum(m["deer_detected"] for m in messages)
        print(f"demo: {len(messages)} snapshot(s) processed, all ok; deer in {deer} of them", file=human)
        return 0
    finally:
        pool.stop(config.job_timeout + 10)
        pubsub.close()


def _print_result(image: Path, message: dict) -> None:
    t = message["timings_ms"]
    head = (f"{image.name:<28} {message['status']:<7} deer={str(message['deer_detected']):<5} "
            f"batch={message['batch_size']} total={t.get('total', 0):6.1f} ms  e2e={t['end_to_end']:6.1f} ms")
    print(head)
    for det in message["detections"]:
        print(f"    {det['class_name']} {det['confidence']:.2f} box {det['box']}")
    if "error" in message:
        print(f"    {message['error']['kind']}: {message['error']['message']}")
