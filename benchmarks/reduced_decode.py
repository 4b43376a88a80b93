#!/usr/bin/env python3
"""Reduced decode (1/4-size JPEG decode) vs the full decode on generated 1080p scenes: parity with
ultralytics and accuracy.

Generates --n scenes with models/demo/make_dataset.py (seeded: the same --seed gives the same scenes)
into a temporary directory, then for the full and the reduced decode of the same model:
  - parity: our Detector vs ultralytics predict on the same IR and images, box by box as the parity
    tests match (worker.tools.reference.parity_counts: same class, IoU >= 0.99, confidence within
    0.01, both ways; tests/inference/test_parity.py requires >= 99%), at conf 0.25 / IoU 0.65 as there;
  - mAP50 / mAP50-95 on the scenes' labels through the served path, as `deer-worker validate` scores
    (conf 0.001, IoU 0.7).
Everything at f32 (ultralytics' compiles pinned too).

    .venv/bin/python benchmarks/reduced_decode.py [--model DIR] [--n 60] [--seed 11] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402

from worker.cameras import CameraSettings  # noqa: E402
from worker.inference.detector import Detector  # noqa: E402
from worker.evaluation.host import host_line  # noqa: E402
from worker.tools.reference import others_compile_pinned, parity_counts, ultralytics_predict  # noqa: E402
from worker.evaluation.dataset import label_path, load_data_yaml, read_labels  # noqa: E402
from worker.evaluation.gate import evaluate_model  # noqa: E402

DEMO_FP32 = ROOT / "models" / "demo" / "deer-yolo26n_openvino_model"
PARITY_CONF, PARITY_IOU = 0.25, 0.65  # tests/inference/test_parity.py's settings


def generate(out: Path, n: int, seed: int, size: str) -> Path:
    """make_dataset.py's scenes (validation split only) -> its data.yaml."""
    subprocess.run([sys.executable, str(ROOT / "models" / "demo" / "make_dataset.py"), "--out", str(out),
                    "--n-train", "0", "--n-val", str(n), "--sizes", size, "--seed", str(seed)],
                   check=True, stdout=subprocess.DEVNULL)
    return out / "data.yaml"


def parity(model: Path, images: list[Path], reduced: bool) -> dict:
    detector = Detector(model, batch="1", iou=PARITY_IOU, reduced_decode=reduced)
    ours = []
    for path in images:
        d = detector.detect(path.read_bytes(), CameraSettings(confidence=PARITY_CONF)).detections
        ours.append((d.xyxy, d.confidence, d.class_id))
    with others_compile_pinned("f32"):
        theirs = ultralytics_predict(model, [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in images],
                                     detector.spec.imgsz[1], PARITY_CONF, PARITY_IOU)
    matched, total = parity_counts(ours, theirs, PARITY_CONF)
    return {"matched": matched, "detections": total, "within_tolerance": round(matched / total, 4) if total else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEMO_FP32, help="IR directory (default: the demo FP32 model)")
    ap.add_argument("--n", type=int, default=60, help="generated scenes (default 60)")
    ap.add_argument("--seed", type=int, default=11, help="make_dataset.py --seed (its val seed is seed + 1000)")
    ap.add_argument("--size", default="1920x1080", help="scene size (default 1920x1080)")
    ap.add_argument("--keep", type=Path, help="generate the scenes here and keep them (default: a temporary dir)")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args(argv)
    if args.n < 1 or not (args.model / "metadata.yaml").exists() and not list(args.model.glob("*.xml")):
        print(f"reduced_decode: need --n >= 1 and an IR directory, got {args.model}", file=sys.stderr)
        return 2
    host = host_line()
    print(host, flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="deer-reduced-decode-") as tmp:
        data = load_data_yaml(generate(args.keep or Path(tmp), args.n, args.seed, args.size))
        images = data.images("val")
        labels = [read_labels(label_path(image), len(data.names)) for image in images]
        rows = {}
        for name, reduced in (("full", False), ("reduced", True)):
            scored = evaluate_model(args.model, images, labels, data.names, precision="f32", reduced_decode=reduced)
            metrics = {k: round(v, 4) for k, v in scored.metrics.as_dict().items() if k in ("mAP50", "mAP50-95")}
            rows[name] = {"parity": parity(args.model, images, reduced), **metrics}
            r = rows[name]
            print(f"{name} decode: {r['parity']['matched']}/{r['parity']['detections']} detections within parity "
                  f"tolerance of ultralytics; mAP50 {r['mAP50']:.3f}, mAP50-95 {r['mAP50-95']:.3f}", flush=True)
    report = {"host": host, "model": str(args.model), "scenes": len(images), "seed": args.seed, "size": args.size,
              "generator": f"models/demo/make_dataset.py --n-train 0 --n-val {args.n} --sizes {args.size} "
                           f"--seed {args.seed}", "precision": "f32", "decode": rows,
              "wall_s": round(time.time() - started, 1)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
