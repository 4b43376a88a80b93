"""What the MQTT bridge adds to a snapshot's latency, measured against the plain queue in the same run.

A private Mosquitto, a private redis-server, one worker (`deer-worker run`, batch 1) and the bridge
(`deer-worker mqtt`). Interleaved, one snapshot in flight at a time:
  mqtt:  ring-mqtt's attributes + image published -> the result on deer-worker/<camera>/result
  queue: enqueue_snapshot() -> the result message on deer:results (PUBSUB)
Both carry the same picture (bytes made unique by a JPEG comment). Prints a JSON report; the goal is
mqtt p50 - queue p50 <= 3 ms.

    .venv/bin/python benchmarks/mqtt_bridge.py [--rounds 100] [--model DIR] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import mqtt_harness as mh  # noqa: E402
from harness import Pool, RedisServer, free_port, percentile, sample_images, wait_for, worker_env  # noqa: E402

from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402

QUEUE = "deer-mqtt-bench"


def variant(jpeg: bytes, n: int) -> bytes:
    text = f"bench {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3),
            "mean": round(statistics.fmean(values), 3), "n": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="snapshots per path (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="rounds per path not counted (default 5)")
    parser.add_argument("--model", help="IR directory (default: the demo FP32 model)")
    parser.add_argument("--image", default="day_640x360_deer.jpg", help="sample in models/demo/samples")
    parser.add_argument("--out", help="also write the JSON report here")
    args = parser.parse_args()
    host = host_line(speed_index())  # as the run starts

    tmp = Path(tempfile.mkdtemp(prefix="deer-mqtt-bench-"))
    redis_server = RedisServer(tmp / "redis").start()
    broker = mh.Mosquitto(tmp / "mosquitto").start()
    extra = {"model": args.model} if args.model else {}
    env = worker_env(redis_server.url(), queue=QUEUE, batch="1", max_age=600.0, precision="f32", **extra)  # f32 pinned
    pool = Pool(env, workers=1, log_file=tmp / "worker.log").start()
    metrics_port = free_port()
    config = mh.bridge_config(tmp / "mqtt.yaml", broker, redis_server.url(), metrics_port=metrics_port)
    bridge = mh.BridgeProcess(config, env, tmp / "bridge.log").start()
    recorder = ring = None
    try:
        conn = redis_server.client()
        pubsub = conn.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("deer:results")
        recorder = mh.Recorder(broker.port, filters=("deer-worker/+/result",))
        ring = mh.connect(broker.port, "bench-ring", clean=False)
        camera = mh.RingCamera(ring, "benchcam")
        jpeg = (ROOT / "models" / "demo" / "samples" / args.image).read_bytes()
        wait_for(lambda: "connected to" in bridge.log(), 120, "the bridge's connection")

        # Only benchcam's results count: the bridge also publishes the queue path's (publish_other_results,
        # on by default), and one of those arriving late must not pass for this round's result. By topic,
        # not by parsing every message so far on each wake-up (that cost grew with the run).
        own_topic = "deer-worker/benchcam/result"

        def own_results() -> int:
            return sum(1 for topic, *_ in recorder.messages if topic == own_topic)

        def via_mqtt(n: int) -> float:
            seen = own_results()
            started = time.perf_counter()
            camera.attributes("interval", time.time())
            camera.image(variant(jpeg, n))
            recorder.wait(lambda: own_results() > seen, 120, "the MQTT result")
            return (time.perf_counter() - started) * 1e3

        def via_queue(n: int) -> float:
            started = time.perf_counter()
            job = enqueue_snapshot(conn, variant(jpeg, n), "queuecam", queue=QUEUE)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=1.0)
                if message and json.loads(message["data"])["job_id"] == job.id:
                    return (time.perf_counter() - started) * 1e3
            raise TimeoutError("no result on deer:results")

        mqtt_ms, queue_ms = [], []
        for n in range(args.warmup + args.rounds):
            first, second = (via_mqtt, via_queue) if n % 2 == 0 else (via_queue, via_mqtt)  # interleaved
            a, b = first(2 * n), second(2 * n + 1)
            if n >= args.warmup:
                (mqtt_ms if first is via_mqtt else queue_ms).append(a)
                (queue_ms if first is via_mqtt else mqtt_ms).append(b)
        pairs = [m - q for m, q in zip(mqtt_ms, queue_ms)]
        report = {"host": host, "rounds": args.rounds, "image": args.image, "model": args.model or "demo FP32 (harness default)", "precision": "f32",
                  "mqtt_ms": summary(mqtt_ms), "queue_ms": summary(queue_ms),
                  "mqtt_minus_queue_p50_ms": round(percentile(mqtt_ms, 50) - percentile(queue_ms, 50), 3),
                  "paired_difference_ms": summary(pairs), "goal_p50_ms": 3.0}
        text = json.dumps(report, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    finally:
        for client in (recorder.client if recorder else None, ring):
            if client is not None:
                client.disconnect()
                client.loop_stop()
        bridge.stop(signal.SIGTERM)
        pool.stop()
        broker.stop()
        redis_server.stop("sigkill")


if __name__ == "__main__":
    sys.exit(main())
