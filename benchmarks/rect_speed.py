#!/usr/bin/env python3
"""Issue-13 benchmark (not a test): square vs rect inputs on a dynamic-shape IR, on this host.

For the demo model (its dynamic end-to-end IR, FP32 and INT8) and YOLO26s built from the ultralytics
yaml (random init, speed only: dynamic end-to-end export at 640, INT8 with NNCF calibrated on the
demo photos at the shapes the worker serves), for 640x360, 1920x1080 and 640x480 JPEGs:
  raw      inference p50 of the compiled model alone (one request, a pre-filled tensor)
  service  p50 of bytes -> Detections (decode + preprocess + infer + postprocess)
each square (imgsz x imgsz, what a static IR runs; Detector(rect=False)) and rect (the shape
ultralytics PyTorch predict uses: 384x640 for 16:9), measured call by call in turn so the shared
host's drift hits both alike. Everything pinned to f32 inference precision. Target: a 16:9 snapshot
>= 1.5x faster rect than square (service p50). Plus, for YOLO26s INT8, the RSS and time to ready of a
worker's detector that warms the default shapes (16x9, 4x3, 1x1) at batch 1 and batch 4, with an
empty compiled-model cache and with a filled one.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/rect_speed.py [--models demo,yolo26s] [--seconds 8]
        [--json] [--out FILE]
Needs the export extra (ultralytics, torch, nncf). Models built here are cached in .cache/bench-models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from worker.inference.build import tune_process  # noqa: E402
from worker.inference.detector import Detector  # noqa: E402
from worker.inference.runtime import CompileOptions, load_spec  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402
from worker.evaluation.isa import proxy_note  # noqa: E402
from worker.tools.options import add_isa, rerun_or_fail, this_command  # noqa: E402

CACHE = ROOT / ".cache" / "bench-models"
DEMO = ROOT / "models" / "demo"
SAMPLES = DEMO / "samples"
SNAPSHOTS = {"640x360": SAMPLES / "day_640x360_deer.jpg", "1920x1080": SAMPLES / "day_1920x1080_deer.jpg",
             "640x480": None}  # 640x480 is cut from the held-out 4:3 photos (the samples have none)
PINNED = CompileOptions(precision="f32")


def snapshot_bytes(name: str) -> bytes:
    if SNAPSHOTS[name] is not None:
        return SNAPSHOTS[name].read_bytes()
    import cv2

    from worker.inference.imagecodec import decode

    for path in sorted((DEMO / "heldout" / "images").glob("*.jpg")):
        image = decode(path.read_bytes()).image
        if image.shape[:2] == (480, 640):
            return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    raise SystemExit("no 640x480 photo in models/demo/heldout")


def _dynamic(folder_glob: str, int8: bool) -> Path | None:
    for folder in sorted(DEMO.glob(folder_glob)):
        if folder.name.startswith(".") or not folder.is_dir():  # hidden: an export in progress
            continue
        spec, _ = load_spec(folder)
        if spec.dynamic and spec.end2end and (spec.weights == "int8") == int8:
            return folder
    return None


def _export_dynamic(source: str, out: Path, imgsz: int) -> Path:
    """ultralytics export of `source` (a .pt or a yaml) as a dynamic end-to-end IR at `out`."""
    from ultralytics import YOLO

    CACHE.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(CACHE)
    try:
        exported = YOLO(source).export(format="openvino", imgsz=imgsz, nms=False, dynamic=True, batch=1)
    finally:
        os.chdir(cwd)
    (CACHE / exported).resolve().rename(out)
    return out


def _quantize(fp32: Path, out: Path, imgsz: int) -> Path:
    """INT8 with the export tool's recipe, calibrated at the shapes the worker serves."""
    from worker.tools.export import calibration_tensors, quantize_ir

    images = sorted(SAMPLES.glob("*.jpg")) + sorted((DEMO / "heldout" / "images").glob("*.jpg"))
    return quantize_ir(fp32, out, calibration_tensors(images[:48], imgsz))


def models(names: list[str]) -> dict[str, dict[str, Path]]:
    found: dict[str, dict[str, Path]] = {}
    if "demo" in names:
        fp32 = _dynamic("*", False) or (CACHE / "demo_dynamic_openvino_model")
        if not fp32.exists():
            _export_dynamic(str(DEMO / "deer-yolo26n.pt"), fp32, 320)
        int8 = _dynamic("*", True) or (CACHE / "demo_dynamic_int8_openvino_model")
        if not int8.exists():
            _quantize(fp32, int8, 320)
        found["demo"] = {"fp32": fp32, "int8": int8}
    if "yolo26s" in names:
        fp32, int8 = CACHE / "yolo26s_dynamic_openvino_model", CACHE / "yolo26s_dynamic_int8_openvino_model"
        if not fp32.exists():
            _export_dynamic("yolo26s.yaml", fp32, 640)
        if not int8.exists():
            _quantize(fp32, int8, 640)
        found["yolo26s"] = {"fp32": fp32, "int8": int8}
    return found


def measure(model_dir: Path, seconds: float) -> list[dict]:
    """Square vs rect, raw and service, for every snapshot, all four in turn per round."""
    square = Detector(model_dir, batch="1", rect=False, options=PINNED, shapes=[])
    rect = Detector(model_dir, batch="1", options=PINNED, shapes=list(SNAPSHOTS))
    cases = []
    for name in SNAPSHOTS:
        data = snapshot_bytes(name)
        width, height = (int(v) for v in name.split("x"))
        rect_shape = rect.input_shape_for(height, width)
        runners = {"square": square._runner(square.spec.imgsz, 1), "rect": rect._runner(rect_shape, 1)}
        tensors = {side: np.random.default_rng(0).integers(0, 256, (1, *r.shape, 3), dtype=np.uint8)
                   for side, r in runners.items()}
        detectors = {"square": square, "rect": rect}
        for _ in range(3):  # warm-up
            for side in runners:
                runners[side].infer(tensors[side]), detectors[side].detect(data)
        times: dict[str, list[float]] = {f"{kind}_{side}": [] for kind in ("raw", "service") for side in runners}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(times["raw_rect"]) < 10:
            for side in runners:
                start = time.perf_counter()
                runners[side].infer(tensors[side])
                times[f"raw_{side}"].append(time.perf_counter() - start)
                start = time.perf_counter()
                detectors[side].detect(data)
                times[f"service_{side}"].append(time.perf_counter() - start)
        p50 = {key: statistics.median(values) * 1e3 for key, values in times.items()}
        cases.append({"snapshot": name, "square_shape": list(square.spec.imgsz), "rect_shape": list(rect_shape),
                      **{f"{key}_p50_ms": round(value, 2) for key, value in p50.items()},
                      "raw_speedup": round(p50["raw_square"] / p50["raw_rect"], 2),
                      "service_speedup": round(p50["service_square"] / p50["service_rect"], 2),
                      "rounds": len(times["raw_rect"])})
    return cases


def ready(model_dir: Path, cache_dir: str) -> dict:
    """A fresh process: seconds until the detector (default shapes, batch 4) is warmed, and its RSS."""
    code = ("import sys, time; start = time.perf_counter(); sys.path.insert(0, %r)\n"
            "from worker.inference.build import tune_process; from worker.inference.detector import Detector\n"
            "from worker.inference.runtime import CompileOptions\n"
            "tune_process(); d = Detector(%r, batch='4', options=CompileOptions(precision='f32', cache_dir=%r))\n"
            "took = time.perf_counter() - start\n"
            "rss = int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024\n"
            "print(took, rss, len(d.runners), d.max_batch)\n") % (str(ROOT), str(model_dir), cache_dir)
    took, rss, runners, max_batch = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                   check=True).stdout.split()[-4:]
    return {"seconds_to_ready": round(float(took), 2), "rss_mb": round(float(rss), 1),
            "compiled_models": int(runners), "max_batch": int(max_batch)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,yolo26s", help="comma-separated: demo, yolo26s")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per model and snapshot")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of the table")
    parser.add_argument("--out", help="also write the JSON report to this file")
    add_isa(parser, "native", "this host; avx2 for the INT8/FP32 and rect/square ratios of an AVX2-only CPU")
    args = parser.parse_args(argv)
    rerun = rerun_or_fail(args, this_command(sys.argv[1:] if argv is None else argv, __file__))
    if rerun is not None:  # measured in a capped child
        return rerun
    tune_process()
    report: dict = {"host": host_line(speed_index()), "isa_note": proxy_note(), "precision": "f32 pinned", "rows": []}
    built = models([m.strip() for m in args.models.split(",") if m.strip()])
    for name, weights in built.items():
        for kind, model_dir in weights.items():
            for case in measure(model_dir, args.seconds):
                report["rows"].append({"model": name, "weights": kind, **case})
                if not args.json:
                    print(f"{name:8} {kind:5} {case['snapshot']:>9} square {case['square_shape']} rect "
                          f"{case['rect_shape']}: raw {case['raw_square_p50_ms']:.1f} -> {case['raw_rect_p50_ms']:.1f} "
                          f"ms (x{case['raw_speedup']}), service {case['service_square_p50_ms']:.1f} -> "
                          f"{case['service_rect_p50_ms']:.1f} ms (x{case['service_speedup']})", flush=True)
    if "yolo26s" in built:
        with tempfile.TemporaryDirectory() as cache:
            report["ready_yolo26s_int8"] = {"empty_cache": ready(built["yolo26s"]["int8"], cache),
                                            "filled_cache": ready(built["yolo26s"]["int8"], cache)}
        if not args.json:
            print("YOLO26s INT8, default shapes x batch 1 and 4:", json.dumps(report["ready_yolo26s_int8"]))
    sixteen_nine = [r for r in report["rows"] if r["snapshot"] in ("640x360", "1920x1080")]
    report["target_16x9_service_speedup_1_5"] = all(r["service_speedup"] >= 1.5 for r in sixteen_nine)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(report["host"])
        if proxy_note():
            print(proxy_note())
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
