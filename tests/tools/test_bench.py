"""deer-worker bench: structure and sanity of the results (never absolute timings: the host is shared)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
import pytest

from conftest import FP32_MODEL
from worker.tools import bench


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def fake(name: str, weights: str, batch: int, p50: float, fps: float, precision: str = "f32") -> bench.Result:
    latency = {"p50_ms": p50, "p95_ms": p50, "p99_ms": p50, "mean_ms": p50, "fps": 1e3 / p50,
               "images_per_s": batch * 1e3 / p50, "iterations": 10}
    throughput = {"fps": fps, "images_per_s": fps * batch, "requests": 2, "streams": 2, "iterations": 10}
    return bench.Result(name, name, weights, bench.Config(precision, 0, batch), precision, latency, throughput,
                        None, {"rss": 100.0, "peak": 120.0})


def test_memory_from_proc_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n")
    assert bench.memory_mb(status) == {"rss": 100.0, "peak": 200.0}
    assert bench.memory_mb(tmp_path / "missing") == {}
    real = bench.memory_mb()
    assert real["rss"] > 0 and real["peak"] >= real["rss"]


def test_speedups_pair_fp32_and_int8_at_the_same_config():
    results = [fake("m", "fp32", 1, 20.0, 60.0), fake("m_int8", "int8", 1, 10.0, 120.0),
               fake("m_int8", "int8", 4, 30.0, 40.0), fake("m", "fp32", 1, 10.0, 90.0, precision="bf16"),
               fake("other_int8", "int8", 1, 5.0, 300.0)]  # another model's INT8 is not m's speedup
    (s,) = bench.speedups(results)
    assert (s["fp32"], s["int8"], s["batch"], s["precision"]) == ("m", "m_int8", 1, "f32")
    assert s["latency_speedup"] == pytest.approx(2.0) and s["throughput_speedup"] == pytest.approx(2.0)


def test_batch_gain_is_images_per_second_ratio():
    (g,) = bench.batch_gains([fake("m", "fp32", 1, 10.0, 100.0), fake("m", "fp32", 4, 32.0, 30.0)])
    assert g["batch1_images_per_s"] == pytest.approx(100.0) and g["batch4_images_per_s"] == pytest.approx(125.0)
    assert g["gain"] == pytest.approx(1.25)


def _colour_pixels(image, bgr) -> int:
    return int((np.abs(image.astype(int) - bgr).sum(axis=2) < 30).sum())


def test_plot_draws_both_series_in_both_panels(tmp_path):
    """matplotlib is in the test extra, so the plot is always drawn here: each panel has a bar of each
    series (matplotlib's first two colours), not just the legend's swatch of it."""
    import cv2

    service = {"p50_ms": 12.0, "p95_ms": 13.0, "iterations": 10, "images": 10}
    results = [dataclasses.replace(fake("m", "fp32", 1, 10.0, 100.0), service=service),
               dataclasses.replace(fake("m_int8", "int8", 1, 8.0, 110.0), service=service)]
    assert bench.plot(results, str(tmp_path / "a.png")) is True
    image = cv2.imread(str(tmp_path / "a.png"))
    assert image is not None and image.shape[:2] == (450, 800)
    blue, orange = (180, 119, 31), (14, 127, 255)  # C0 #1f77b4, C1 #ff7f0e as BGR
    for half in (image[:, :400], image[:, 400:]):
        assert _colour_pixels(half, blue) > 1000 and _colour_pixels(half, orange) > 1000


def test_plot_says_matplotlib_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    assert bench.plot([fake("m", "fp32", 1, 10.0, 100.0)], str(tmp_path / "b.png")) is False
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("argv", [["--threads", "a"], ["--precision", "f64"], ["--threads", "-1"]])
def test_bad_lists_are_refused(argv):
    with pytest.raises(SystemExit):
        parse(*argv)


def test_bench_demo_model_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.run(parse("--model", str(FP32_MODEL), "--seconds", "1", "--batch", "1,4", "--out", str(out)))
    assert code == 0
    report = json.loads(out.read_text())
    assert report["snapshots"] > 0 and report["openvino"]
    assert [(r["batch"], r["threads"], r["precision"]) for r in report["results"]] == [(1, 0, "f32"), (4, 0, "f32")]
    for r in report["results"]:
        assert r["weights"] == "fp32" and r["runs"] == "f32"  # pinned: not the CPU's bf16 default
        lat, thr = r["latency"], r["throughput"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
        # calls per second over the timed loop: the loop also spends time between calls, never less
        assert lat["mean_ms"] <= 1e3 / lat["fps"] * 1.001, lat
        assert lat["images_per_s"] == pytest.approx(lat["fps"] * r["batch"])
        assert lat["iterations"] >= 1 and thr["iterations"] >= 1
        assert thr["images_per_s"] == pytest.approx(thr["fps"] * r["batch"]) and thr["images_per_s"] > 0
        assert thr["requests"] >= 1 and thr["streams"] >= 1
        assert r["memory_mb"]["rss"] > 0 and r["memory_mb"]["peak"] >= r["memory_mb"]["rss"]
    service = report["results"][0]["service"]
    assert report["results"][1]["service"] is None  # service time is a batch-1 figure
    assert 0 < service["p50_ms"] <= service["p95_ms"] and service["iterations"] >= service["images"]
    (gain,) = report["batch_gains"]
    b1, b4 = (r["latency"]["images_per_s"] for r in report["results"])
    assert (gain["batch1_images_per_s"], gain["batch4_images_per_s"]) == (b1, b4)
    assert gain["gain"] == pytest.approx(b4 / b1)
    memory = report["memory_mb"]
    assert memory["peak"] >= memory["rss"] > 0 and memory["peak"] > memory["baseline"] > 0
    floor = report["decode_floor"]  # beside the service time: decoding alone is below it
    assert floor["images"] == report["snapshots"] and 0 < floor["p50_ms"] < service["p50_ms"]
    printed = capsys.readouterr().out
    assert report["host"].startswith("host: ") and printed.splitlines()[0] == report["host"]  # which CPU, ISA, load
    assert "p50 ms" in printed and "batch 4 vs 1" in printed and "RSS" in printed and "decode floor" in printed


def test_decode_floor_is_a_full_decode_of_each_snapshot():
    import time

    from worker.config import resolve_path
    from worker.evaluation.timing import measure_decode_floor
    from worker.inference.imagecodec import decode

    samples = resolve_path("models/demo/samples")
    small, large = ((samples / name).read_bytes() for name in ("day_640x360_deer.jpg", "day_1920x1080_deer.jpg"))
    floor_small, floor_large = measure_decode_floor([small]), measure_decode_floor([large])
    assert floor_small["images"] == 1 and 0 < floor_small["p50_ms"] <= floor_small["p95_ms"]
    # nine times the pixels: a full decode costs more
    assert floor_large["p50_ms"] > 2 * floor_small["p50_ms"]
    # and it is the full decode, not the worker's reduced one (1/8 size skips most of the IDCT and colour work)
    # its best of 7 (the median of 3 met a busy host's spikes: 5.1 ms once for a ~1 ms decode)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        decode(large, reduction=8)
        times.append(time.perf_counter() - t0)
    assert floor_large["p50_ms"] > 1.5 * 1e3 * min(times)


def test_a_dynamic_ir_is_benched_at_the_rect_shape_the_worker_serves(tmp_path):
    """Raw latency of a dynamic IR runs at the 16:9 rect input (192x320 at imgsz 320), a static one at its square."""
    from conftest import DEMO

    out = tmp_path / "bench.json"
    dynamic = DEMO / "deer-yolo26n_dynamic_raw_fp32_openvino_model"
    code = bench.run(parse("--model", str(dynamic), "--model", str(FP32_MODEL), "--seconds", "0.3", "--out", str(out),
                           str(DEMO / "samples" / "day_640x360_deer.jpg")))
    assert code == 0
    shapes = {r["model"]: r["shape"] for r in json.loads(out.read_text())["results"]}
    assert shapes == {str(dynamic): [192, 320], str(FP32_MODEL): [320, 320]}
