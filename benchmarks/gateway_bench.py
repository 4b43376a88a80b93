#!/usr/bin/env python3
"""Gateway latency and batching: `deer-worker gateway` against the plain queue, in one run.

A private redis-server on a free loopback port, one worker (`deer-worker run`, demo FP32 unless
--model), one gateway. Latency with one request in flight, interleaved so both paths see the same
host: a POST /detect (httpx, the coordinator's call) and a plain enqueue_snapshot -> result read off
the results stream. Reported: each p50/p95 and the gateway's overhead, /detect p50 minus queue p50
(target <= 3 ms). Then 4 concurrent clients POST /detect for --seconds: throughput and the mean
batch size the worker drained (from the result messages' batch_size).

    .venv/bin/python benchmarks/gateway_bench.py [--n 200] [--seconds 15] [--model DIR] [--snapshot JPEG] [--json FILE]

tests/serve/test_gateway.py starts its stack with the helpers here (GatewayProcess, start_worker).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "reliability"))

import httpx  # noqa: E402
import redis  # noqa: E402

import harness  # noqa: E402
from worker.jobqueue.producer import enqueue_snapshot  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402

DEMO_ZONES = ROOT / "models" / "demo" / "zones.yaml"  # the demo model's threshold (0.25)
SAMPLES = ROOT / "models" / "demo" / "samples"
SAMPLE = SAMPLES / "day_640x360_deer.jpg"  # the user's snapshots are 640x360 JPEGs (~24-33 KB)
QUEUE = "deer-gateway"


def stack_env(redis_url: str, **extra) -> dict[str, str]:
    """Worker and gateway settings of one stack: its Redis, queue, the demo zones, no metrics port."""
    return harness.worker_env(redis_url, queue=QUEUE, batch="4", job_timeout=30, max_age=30.0,
                              zones=str(DEMO_ZONES), **extra)


def start_worker(env: dict[str, str], log_file: Path | None = None) -> harness.Pool:
    return harness.Pool(env, workers=1, log_file=log_file).start()


class GatewayProcess:
    """`deer-worker gateway` on a free loopback port, as a process group of its own."""

    def __init__(self, env: dict[str, str], *args: str, log_file: Path | None = None) -> None:
        self.env, self.args, self.log_file = env, args, log_file
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", "WARNING", "gateway",
                                      "--port", str(self.port), *self.args], cwd=ROOT, env=self.env,
                                     stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:  # up once /health answers at all (200 or 503)
            try:
                httpx.get(f"{self.url}/health", timeout=2.0)
                return self
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited with {self.proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gateway on {self.url} not answering after {timeout} s")
                time.sleep(0.05)

    def wait_health(self, status: int, timeout: float) -> dict:
        return wait_health(self.url, status, timeout)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, how: int = signal.SIGTERM) -> None:
        """SIGTERM lets requests in hand finish (uvicorn's graceful shutdown); SIGKILL does not wait."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, how)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_health(url: str, status: int, timeout: float) -> dict:
    """Until GET /health answers `status`; returns its body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = httpx.get(f"{url}/health", timeout=5.0)
            if reply.status_code == status:
                return reply.json()
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/health not {status} within {timeout} s")
        time.sleep(0.1)


def coordinator_post(client: httpx.Client, url: str, jpeg: bytes, **params) -> httpx.Response:
    """The user's coordinator's call, byte for byte: one multipart field `file`, a 30 s timeout."""
    return client.post(f"{url}/detect", files={"file": ("snapshot.jpg", jpeg, "image/jpeg")}, params=params,
                       timeout=30.0)


class StreamWaiter:
    """The plain queue path's consumer: XREAD BLOCK on the results stream for one job id."""

    def __init__(self, connection: redis.Redis, stream: str = "deer:results:stream") -> None:
        self.connection, self.stream = connection, stream
        last = connection.xrevrange(stream, count=1)
        self.position = last[0][0] if last else b"0-0"

    def wait(self, job_id: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, entries in self.connection.xread({self.stream: self.position}, block=1000) or ():
                for entry_id, fields in entries:
                    self.position = entry_id
                    if fields[b"job_id"].decode() == job_id:
                        return json.loads(fields[b"result"])
        raise TimeoutError(f"no result for {job_id}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(n: int, seconds: float, model: str | None, snapshot: Path = SAMPLE) -> dict:
    jpeg = snapshot.read_bytes()
    with tempfile.TemporaryDirectory() as tmp, harness.RedisServer(Path(tmp) / "redis") as server:
        env = stack_env(server.url(), **({"model": model} if model else {}))
        pool = start_worker(env, Path(tmp) / "worker.log")
        gateway = GatewayProcess(env, log_file=Path(tmp) / "gateway.log").start()
        try:
            gateway.wait_health(200, 300.0)
            connection = server.client()
            waiter = StreamWaiter(connection)
            http, queue_ms = httpx.Client(), []
            gateway_ms: list[float] = []
            for i in range(n + 20):  # the first 20 of each warm up
                started = time.perf_counter()
                reply = coordinator_post(http, gateway.url, jpeg)
                elapsed = (time.perf_counter() - started) * 1e3
                assert reply.status_code == 200, reply.text
                if i >= 20:
                    gateway_ms.append(elapsed)
                job_id = uuid.uuid4().hex
                started = time.perf_counter()
                enqueue_snapshot(connection, jpeg, "http", job_id=job_id, queue=QUEUE)
                message = waiter.wait(job_id)
                elapsed = (time.perf_counter() - started) * 1e3
                assert message["status"] == "ok", message
                if i >= 20:
                    queue_ms.append(elapsed)
            latency = {"n": n, "gateway_p50_ms": round(statistics.median(gateway_ms), 2),
                       "gateway_p95_ms": round(pct(gateway_ms, 0.95), 2),
                       "queue_p50_ms": round(statistics.median(queue_ms), 2),
                       "queue_p95_ms": round(pct(queue_ms, 0.95), 2)}
            latency["overhead_p50_ms"] = round(latency["gateway_p50_ms"] - latency["queue_p50_ms"], 2)
            latency["target_ms"], latency["within_target"] = 3.0, latency["overhead_p50_ms"] <= 3.0

            batches: list[int] = []
            lock, stop_at = threading.Lock(), time.monotonic() + seconds
            statuses: dict[int, int] = {}

            def client_loop() -> None:
                with httpx.Client() as own:
                    while time.monotonic() < stop_at:
                        reply = own.post(f"{gateway.url}/detect", files={"file": ("s.jpg", jpeg, "image/jpeg")},
                                         timeout=30.0)
                        with lock:
                            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            # batch sizes come from the result messages on the stream, read after the run
            first = connection.xrevrange("deer:results:stream", count=1)
            since = first[0][0] if first else b"0-0"
            threads = [threading.Thread(target=client_loop) for _ in range(4)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.monotonic() - started
            for _, fields in connection.xrange("deer:results:stream", min=f"({since.decode()}"):
                batches.append(json.loads(fields[b"result"])["batch_size"])
            concurrent = {"clients": 4, "seconds": round(wall, 1), "statuses": statuses,
                          "requests_per_s": round(sum(statuses.values()) / wall, 1),
                          "mean_batch_size": round(statistics.mean(batches), 2) if batches else None,
                          "batch_sizes": {str(b): batches.count(b) for b in sorted(set(batches))}}
            return {"model": model or str(harness.default_model()), "snapshot": snapshot.name, "latency": latency,
                    "concurrent": concurrent}
        finally:
            gateway.stop()
            pool.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="measured requests per path (after 20 warm-up)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the 4-client run")
    parser.add_argument("--model", help="IR directory for the worker (default: the demo FP32, harness.default_model)")
    parser.add_argument("--snapshot", type=Path, default=SAMPLE,
                        help="JPEG every request sends (default: the user's size, 640x360; the multipart upload "
                             "of a 1920x1080 one costs the gateway more)")
    parser.add_argument("--json", dest="json_file", help="also write the report to this file")
    args = parser.parse_args(argv)
    host = host_line(speed_index())  # as the run starts
    report = {"host": host, **run(args.n, args.seconds, args.model, args.snapshot)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_file:
        Path(args.json_file).write_text(text + "\n")
    return 0 if report["latency"]["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
