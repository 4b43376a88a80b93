"""Timing figures: percentiles of measured durations, and the loop that measures an IR's pure inference
latency (bench, tune and compare report them the same way)."""

from __future__ import annotations

import time

import numpy as np

WARMUP_RUNS = 3  # the first inferences allocate and tune kernels; benchmark_app reports them apart too


def percentiles(values, points=(5, 50, 95), *, digits: int | None = 4, suffix: str = "") -> dict[str, float | None]:
    """{"p5": ..., "p50": ...} of the values (None each when there are none), rounded to `digits`."""
    if not len(values):
        return {f"p{p}{suffix}": None for p in points}
    found = {f"p{p}{suffix}": float(np.percentile(values, p)) for p in points}
    return found if digits is None else {k: round(v, digits) for k, v in found.items()}


def latency_summary(seconds) -> dict[str, float]:
    """Durations in seconds -> p50/p95/p99/mean in milliseconds, unrounded (bench's figures)."""
    ms = np.asarray(seconds, float) * 1e3
    return {**percentiles(ms, (50, 95, 99), digits=None, suffix="_ms"), "mean_ms": float(ms.mean())}


def service_times(seconds) -> dict[str, float | None]:
    """Per-snapshot service times in seconds -> p50/p95 in milliseconds, 2 decimals (compare's figures)."""
    return percentiles(np.asarray(seconds, float) * 1e3, (50, 95), digits=2, suffix="_ms")


def percentile_ms(seconds, q: float) -> float:
    return float(np.percentile(np.asarray(seconds, float) * 1e3, q))


def random_input(batch: int, imgsz: tuple[int, int]) -> np.ndarray:
    # Random pixels like benchmark_app's default fill; a dense CNN's time does not depend on content.
    return np.random.default_rng(0).integers(0, 256, (batch, imgsz[0], imgsz[1], 3), dtype=np.uint8)


def measure_latency(runner, tensor: np.ndarray, seconds: float) -> dict[str, float]:
    """Synchronous loop on one request with its input set once: pure inference time."""
    import openvino as ov

    request = runner.request
    request.set_input_tensor(ov.Tensor(tensor, shared_memory=True))
    for _ in range(WARMUP_RUNS):
        request.infer()
    times: list[float] = []
    started = time.perf_counter()
    while not times or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        request.infer()
        times.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    batch = tensor.shape[0]
    return {**latency_summary(times), "fps": len(times) / elapsed, "images_per_s": len(times) * batch / elapsed,
            "iterations": len(times)}


def measure_decode_floor(snapshots: list[bytes], rounds: int = 3) -> dict[str, float]:
    """A plain full decode of each snapshot (no reduction, no letterbox), in this process: what is physically
    left per image once inference is gone, to read the service time against."""
    from worker.inference.imagecodec import decode

    times = []
    for _ in range(rounds):
        for data in snapshots:
            t0 = time.perf_counter()
            decode(data)
            times.append(time.perf_counter() - t0)
    stats = latency_summary(times)
    return {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "images": len(snapshots)}
