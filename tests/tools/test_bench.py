"""deer-worker bench: structure and sanity of the results (never absolute timings: the host is shared)."""

from __future__ import annotations

import argparse
import json
import sys

import pytest

from conftest import FP32_MODEL
from worker import bench


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


def test_plot_writes_a_png_or_says_matplotlib_is_missing(tmp_path, monkeypatch):
    results = [fake("m", "fp32", 1, 10.0, 100.0)]
    if bench.plot(results, str(tmp_path / "a.png")):
        assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    assert bench.plot(results, str(tmp_path / "b.png")) is False
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("argv", [["--threads", "a"], ["--precision", "f64"], ["--threads", "-1"]])
def test_bad_lists_are_refused(argv):
    with pytest.raises(SystemExit):
        parse(*argv)


@pytest.mark.skipif(not (FP32_MODEL / "metadata.yaml").exists(),
                    reason=f"demo FP32 model not built yet ({FP32_MODEL}); models/demo/build.py makes it")
def test_bench_demo_model_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.run(parse("--model", str(FP32_MODEL), "--seconds", "1", "--batch", "1,4", "--json", str(out)))
    assert code == 0
    report = json.loads(out.read_text())
    assert report["snapshots"] > 0 and report["openvino"]
    assert [(r["batch"], r["threads"], r["precision"]) for r in report["results"]] == [(1, 0, "f32"), (4, 0, "f32")]
    for r in report["results"]:
        assert r["weights"] == "fp32" and r["runs"] == "f32"  # pinned: not the CPU's bf16 default
        lat, thr = r["latency"], r["throughput"]
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
        assert lat["fps"] > 0 and lat["images_per_s"] == pytest.approx(lat["fps"] * r["batch"])
        assert lat["iterations"] >= 1 and thr["iterations"] >= 1
        assert thr["fps"] > 0 and thr["requests"] >= 1 and thr["streams"] >= 1
        assert r["memory_mb"]["rss"] > 0 and r["memory_mb"]["peak"] >= r["memory_mb"]["rss"]
    service = report["results"][0]["service"]
    assert report["results"][1]["service"] is None  # service time is a batch-1 figure
    assert 0 < service["p50_ms"] <= service["p95_ms"] and service["iterations"] >= service["images"]
    (gain,) = report["batch_gains"]
    assert gain["gain"] > 0
    memory = report["memory_mb"]
    assert memory["peak"] >= memory["rss"] > 0 and memory["peak"] > memory["baseline"] > 0
    printed = capsys.readouterr().out
    assert "p50 ms" in printed and "batch 4 vs 1" in printed and "RSS" in printed
