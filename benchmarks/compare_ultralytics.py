#!/usr/bin/env python3
"""Issue-2 benchmark (not a test): our service time vs the runtime's own limit vs ultralytics predict().

For the demo model and YOLO26n/s built from the ultralytics yaml (random init, exported here to
FP32 end-to-end IR at 640 and quantized to INT8 with NNCF on the sample snapshots), one run prints:
  raw   benchmark_app-style inference p50 (worker's compiled graph, one request, pre-filled tensor)
  floor a plain full decode of the same JPEG p50, in this process (what is physically left beside raw)
  ours  full service time p50/p95 for a 1920x1080 JPEG (bytes -> Detections: decode + preprocess +
        infer + postprocess)
  ul    ultralytics YOLO(ir_dir).predict(jpeg path) p50 on the same IR
The three are measured in turn, call by call, so the host's drift affects them alike (ultralytics
in a child process of its own, with the allocator it would have in the user's service).
Every side is pinned to f32 inference precision (this CPU would use bf16 otherwise; the target has
none). Targets: ours p50 <= raw p50 + 3 ms; ul p50 / ours p50 >= 1.3. Plus the RSS of a process that
holds YOLO26s INT8 compiled after 100 detections (goal <= 300 MB).

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/compare_ultralytics.py [--models demo,yolo26n,yolo26s]
        [--seconds 10] [--json FILE]
Needs the export extra (ultralytics, torch, nncf). Models built here are cached in .cache/bench-models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openvino as ov  # noqa: E402

from worker.inference.build import tune_process  # noqa: E402
from worker.inference.detector import Detector  # noqa: E402
from worker.inference.runtime import CompileOptions, compile_model, load_spec  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402
from worker.tools.reference import others_compile_pinned  # noqa: E402

CACHE = ROOT / ".cache" / "bench-models"
SNAPSHOT = ROOT / "models" / "demo" / "samples" / "day_1920x1080_deer.jpg"
DEMO = ROOT / "models" / "demo"


def build_yaml_model(name: str) -> tuple[Path, Path]:
    """YOLO26<size> from the ultralytics yaml -> FP32 end2end IR (640) and an INT8 IR, cached."""
    from worker.tools.export import calibration_tensors, quantize_ir

    fp32 = CACHE / f"{name}_openvino_model"
    int8 = CACHE / f"{name}_int8_openvino_model"
    if not fp32.exists():
        from ultralytics import YOLO

        CACHE.mkdir(parents=True, exist_ok=True)
        cwd = os.getcwd()
        os.chdir(CACHE)
        try:
            exported = YOLO(f"{name}.yaml").export(format="openvino", imgsz=640, nms=False, dynamic=False, batch=1)
        finally:
            os.chdir(cwd)
        exported = (CACHE / exported).resolve()  # ultralytics answers relative to the cwd it ran in
        if exported != fp32.resolve():
            exported.rename(fp32)
    if not int8.exists():
        images = sorted((DEMO / "samples").glob("*.jpg")) + sorted((DEMO / "heldout" / "images").glob("*.jpg"))
        quantize_ir(fp32, int8, calibration_tensors(images[:64], 640, square=True))  # a static 640x640 IR
    return fp32, int8


def measure_interleaved(model_dir: Path, seconds: float, reduced_decode: bool = False) -> dict:
    """Raw inference, our service and ultralytics predict, one call of each in turn, so that the
    machine's drift (this shared host's speed moves by 2x over minutes) hits all three alike.
    Ultralytics runs in a process of its own, as it would in the user's service: our process tunes
    its allocator (inference.build.tune_process), which must not speed ultralytics up too."""
    import numpy as np

    spec, model = load_spec(model_dir)
    runner = compile_model(model, spec, 1, CompileOptions(precision="f32"))
    tensor = np.random.default_rng(0).integers(0, 256, (1, *spec.imgsz, 3), dtype=np.uint8)
    runner.request.set_input_tensor(ov.Tensor(tensor, shared_memory=True))
    detector = Detector(model_dir, batch="1", reduced_decode=reduced_decode)
    ultralytics = subprocess.Popen([sys.executable, __file__, "--ultralytics-server", str(model_dir)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def predict() -> float:  # the child's own timing of one predict() call
        ultralytics.stdin.write("predict\n")
        ultralytics.stdin.flush()
        return float(ultralytics.stdout.readline())

    data = SNAPSHOT.read_bytes()
    from worker.inference.imagecodec import decode

    raw, ours, ul, floor = [], [], [], []
    try:
        for _ in range(3):  # warm-up
            runner.request.infer(), detector.detect(data), predict()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or len(raw) < 10:
            start = time.perf_counter()
            runner.request.infer()
            raw.append(time.perf_counter() - start)
            start = time.perf_counter()
            decode(data)
            floor.append(time.perf_counter() - start)
            start = time.perf_counter()
            detector.detect(data)
            ours.append(time.perf_counter() - start)
            ul.append(predict())
    finally:
        ultralytics.stdin.close()
        ultralytics.wait(30)
    ours.sort()
    return {"raw_p50_ms": statistics.median(raw) * 1e3, "decode_floor_p50_ms": statistics.median(floor) * 1e3,
            "service_p50_ms": statistics.median(ours) * 1e3,
            "service_p95_ms": ours[int(0.95 * (len(ours) - 1))] * 1e3, "ultralytics_p50_ms": statistics.median(ul) * 1e3,
            "rounds": len(raw)}


def ultralytics_server(model_dir: str) -> int:
    """Child process: one `YOLO(ir).predict(jpeg path)` per line on stdin, its seconds on stdout."""
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # ultralytics prints to stdout: keep that out of the replies
    sys.stdout = sys.stderr
    from ultralytics import YOLO

    with others_compile_pinned("f32"):
        model, path = YOLO(model_dir, task="detect"), str(SNAPSHOT)
        for _ in sys.stdin:
            start = time.perf_counter()
            model.predict(path, conf=0.55, verbose=False)
            print(time.perf_counter() - start, file=reply, flush=True)
    return 0


def rss_after_100(model_dir: Path) -> float:
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from worker.inference.build import tune_process; tune_process()\n"
            "from worker.inference.detector import Detector\n"
            "d = Detector(%r, batch='1'); data = open(%r, 'rb').read()\n"
            "[d.detect(data) for _ in range(100)]\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
            % (str(ROOT), str(model_dir), str(SNAPSHOT)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,yolo26n,yolo26s")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reduced-decode", action="store_true",
                    help="our side decodes JPEGs at reduced size (faster; outside parity on the demo model)")
    ap.add_argument("--json")
    ap.add_argument("--ultralytics-server", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ultralytics_server:
        return ultralytics_server(args.ultralytics_server)
    host = host_line(speed_index())
    print(host, flush=True)
    tune_process()  # as the worker's entry point does; the ultralytics child stays untuned
    pairs = []
    for name in args.models.split(","):
        if name == "demo":
            pairs.append(("demo", DEMO / "deer-yolo26n_openvino_model", DEMO / "deer-yolo26n_int8_openvino_model"))
        else:
            pairs.append((name, *build_yaml_model(name)))
    rows = []
    for name, fp32, int8 in pairs:
        for weights, model_dir in (("fp32", fp32), ("int8", int8)):
            m = measure_interleaved(model_dir, args.seconds, args.reduced_decode)
            rows.append({"model": name, "weights": weights, "precision": "f32", "reduced_decode": args.reduced_decode,
                         **{k: round(v, 2) for k, v in m.items()},
                         "overhead_ms": round(m["service_p50_ms"] - m["raw_p50_ms"], 2),
                         "speedup_vs_ultralytics": round(m["ultralytics_p50_ms"] / m["service_p50_ms"], 2)})
            r = rows[-1]
            print(f"{name:<8} {weights:<5} raw p50 {r['raw_p50_ms']:7.2f} ms + decode floor "
                  f"{r['decode_floor_p50_ms']:6.2f} ms | ours p50 {r['service_p50_ms']:7.2f} "
                  f"p95 {r['service_p95_ms']:7.2f} ms (+{r['overhead_ms']:.2f}) | ultralytics p50 "
                  f"{r['ultralytics_p50_ms']:7.2f} ms | x{r['speedup_vs_ultralytics']:.2f}"
                  f"  [{'ok' if r['overhead_ms'] <= 3 else 'MISS'} +3 ms, "
                  f"{'ok' if r['speedup_vs_ultralytics'] >= 1.3 else 'MISS'} 1.3x]", flush=True)
    memory = None
    s_int8 = next((p[2] for p in pairs if p[0] == "yolo26s"), None) if not args.reduced_decode else None
    if s_int8 is not None:
        memory = round(rss_after_100(s_int8), 1)
        print(f"RSS of a process holding YOLO26s INT8 compiled, after 100 detections: {memory} MB (goal <= 300)")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": host, "rows": rows, "yolo26s_int8_rss_mb": memory,
                                               "snapshot": str(SNAPSHOT.relative_to(ROOT))}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
