#!/usr/bin/env python3
"""Reproducible recipe for the shipped demo deer detector (models/demo/).

    YOLO_OFFLINE=1 .venv/bin/python models/demo/build.py --work /tmp/deer-demo-data          # everything
    YOLO_OFFLINE=1 .venv/bin/python models/demo/build.py --work /tmp/deer-demo-data --stage train
    (stages: data, train, export, int8, eval, all; later stages reuse the earlier ones' outputs in --work)

Steps
  1. data    synthetic Ring-like yard snapshots from make_dataset.py into --work/data (NOT the repo):
             train = seed 0 (--n-train images), val (for best.pt selection) = seed 1000 (--n-val images),
             sizes 640x360 / 1280x720 (16:9) and 640x480 (4:3), ~20 % hard negatives.
             Held-out split models/demo/heldout/ = seed 2000 (different from train and val), 640x360 + 640x480,
             JPEG q85; demo snapshots models/demo/samples/ = seed 7.
  2. train   YOLO("yolo26n.yaml") (random init, no downloaded weights) .train(imgsz=320, seed=0, deterministic,
             single class 'deer', CPU, batch 16, workers 2, --epochs) -> best.pt -> models/demo/deer-yolo26n.pt
  2b. finetune  phase 2: YOLO(phase-1 best.pt).train(--finetune-epochs, lr0 0.005, warm-up 1) -> best.pt
             (the end-to-end head lags the raw head early on; two phases so each fits a working session)
  3. export  ultralytics export format="openvino", imgsz=320, batch=1, dynamic=False:
               nms=False -> end2end NMS-free head, output (1,300,6) x1,y1,x2,y2,score,class  (metadata end2end: true)
               nms=None  -> raw head (1,5,A) that needs NMS                                     (metadata end2end: false)
             -> deer-yolo26n_openvino_model/ (FP32), deer-yolo26n_raw_openvino_model/ (FP32)
  4. int8    worker.tools.export (the code behind `deer-worker export --int8`): --n-calib train images through the
             worker's own preprocessing (decode, letterbox 320, pad 114), nncf.quantize preset MIXED; two
             variants: no ignored scope, and ultralytics' own exporter scope (every Sigmoid + every op of the
             Detect head). Picked in eval by held-out mAP50-95 first, then latency (both pinned f32)
             -> deer-yolo26n_int8_openvino_model/
  5. eval    YOLO(ir_dir, task="detect").val(data=models/demo/heldout.yaml, imgsz=320, batch=1) for each IR
             (FP32 with OpenVINO INFERENCE_PRECISION_HINT=f32 forced, and at the CPU default, which is bf16 on
             bf16-capable CPUs), benchmark_app latency; results -> models/demo/build_report.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

HERE = Path(__file__).resolve().parent  # models/demo
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent))  # the repo, for worker.tools.export
import make_dataset  # noqa: E402

STEM = "deer-yolo26n"
FP32_DIR = HERE / f"{STEM}_openvino_model"
RAW_DIR = HERE / f"{STEM}_raw_openvino_model"
INT8_DIR = HERE / f"{STEM}_int8_openvino_model"
PT = HERE / f"{STEM}.pt"
HELDOUT_YAML = HERE / "heldout.yaml"
REPORT = HERE / "build_report.json"
NAMES = {0: "deer"}


def log(msg):
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_report():
    return json.loads(REPORT.read_text()) if REPORT.exists() else {}


def save_report(rep):
    REPORT.write_text(json.dumps(rep, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------------------- data
def stage_data(a, rep):
    t0 = time.time()
    data = Path(a.work) / "data"
    n_have = len(list((data / "images" / "train").glob("*.jpg"))) if (data / "data.yaml").exists() else -1
    if n_have != a.n_train:
        shutil.rmtree(data, ignore_errors=True)
        make_dataset.main(["--out", str(data), "--n-train", str(a.n_train), "--n-val", str(a.n_val),
                           "--seed", str(a.seed), "--val-seed", str(a.seed + 1000),
                           "--sizes", "640x360,1280x720,640x480", "--quality", "85"])
    else:
        log(f"reusing {data} (same seeds give identical files)")
    # held-out split inside the repo: different seed, small files
    ho = HERE / "heldout"
    if ho.exists():
        shutil.rmtree(ho)
    tmp = Path(a.work) / "heldout_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    make_dataset.main(["--out", str(tmp), "--n-train", "0", "--n-val", str(a.n_heldout), "--val-seed",
                       str(a.seed + 2000), "--sizes", "640x360,640x480", "--quality", "85"])
    (ho / "images").mkdir(parents=True)
    shutil.copytree(tmp / "images" / "val", ho / "images", dirs_exist_ok=True)
    shutil.copytree(tmp / "labels" / "val", ho / "labels", dirs_exist_ok=True)
    # No 'path' key: ultralytics then uses the yaml's own directory as the dataset root, so
    # YOLO(...).val(data=".../models/demo/heldout.yaml") works from any working directory.
    HELDOUT_YAML.write_text(
        "# Held-out synthetic deer split (seed %d, never used for training or model selection).\n"
        "# No 'path' key on purpose: ultralytics resolves train/val relative to this file's directory.\n"
        "train: heldout/images\nval: heldout/images\nnames:\n  0: deer\n" % (a.seed + 2000)
    )
    samples = HERE / "samples"
    shutil.rmtree(samples, ignore_errors=True)
    make_dataset.write_samples(samples, a.sample_seed)
    rep["data"] = {"train": a.n_train, "val": a.n_val, "heldout": a.n_heldout, "seed_train": a.seed,
                   "seed_val": a.seed + 1000, "seed_heldout": a.seed + 2000, "seed_samples": a.sample_seed,
                   "wall_s": round(time.time() - t0, 1)}


# --------------------------------------------------------------------------------------------------------------- train
def stage_train(a, rep):
    from ultralytics import YOLO

    t0 = time.time()
    model = YOLO("yolo26n.yaml")
    model.train(data=str(Path(a.work) / "data" / "data.yaml"), epochs=a.epochs, imgsz=320, batch=16, device="cpu",
                workers=a.workers, seed=a.seed, deterministic=True, single_cls=True, project=str(Path(a.work) / "runs"),
                name="train", exist_ok=True, plots=False, amp=False, patience=0, cache="ram", close_mosaic=5)
    best = Path(a.work) / "runs" / "train" / "weights" / "best.pt"
    shutil.copy(best, PT)
    fix_names(PT)
    rep["train"] = {"epochs": a.epochs, "imgsz": 320, "batch": 16, "seed": a.seed, "wall_s": round(time.time() - t0, 1),
                    "best_pt_bytes": PT.stat().st_size}


def stage_finetune(a, rep):
    """Phase 2: continue from phase 1's best.pt (lower lr, short warm-up). Two phases, not one long
    schedule, so each fits in a working session on 2 cores; the end-to-end (NMS-free) branch of
    YOLO26 lags the raw head early in training and needs these extra epochs."""
    from ultralytics import YOLO

    t0 = time.time()
    model = YOLO(str(PT))
    model.train(data=str(Path(a.work) / "data" / "data.yaml"), epochs=a.finetune_epochs, imgsz=320, batch=16,
                device="cpu", workers=a.workers, seed=a.seed, deterministic=True, single_cls=True, lr0=0.005,
                warmup_epochs=1, project=str(Path(a.work) / "runs"), name="finetune", exist_ok=True, plots=False,
                amp=False, patience=0, cache="ram", close_mosaic=6)
    best = Path(a.work) / "runs" / "finetune" / "weights" / "best.pt"
    shutil.copy(best, PT)
    fix_names(PT)
    rep["finetune"] = {"epochs": a.finetune_epochs, "lr0": 0.005, "from": "phase-1 best.pt",
                       "wall_s": round(time.time() - t0, 1), "best_pt_bytes": PT.stat().st_size}


# -------------------------------------------------------------------------------------------------------------- export
def fix_names(pt):
    """ultralytics 8.4.190 renames the class to 'item' when training with single_cls=True; restore 'deer'."""
    import torch

    ckpt = torch.load(pt, map_location="cpu", weights_only=False)
    for k in ("model", "ema"):
        if ckpt.get(k) is not None and getattr(ckpt[k], "names", None) != NAMES:
            ckpt[k].names = dict(NAMES)
            log(f"{Path(pt).name}: {k}.names -> {NAMES}")
    torch.save(ckpt, pt)


def _export(pt, nms, work_sub):
    from ultralytics import YOLO

    d = Path(work_sub)
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    shutil.copy(pt, d / pt.name)
    out = YOLO(str(d / pt.name)).export(format="openvino", imgsz=320, batch=1, dynamic=False, nms=nms, device="cpu")
    return Path(out)


def stage_export(a, rep):
    import openvino as ov

    t0 = time.time()
    fix_names(PT)  # idempotent
    for nms, dst in ((False, FP32_DIR), (None, RAW_DIR)):
        out = _export(PT, nms, Path(a.work) / ("export_e2e" if nms is False else "export_raw"))
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(out, dst)
        m = ov.Core().read_model(str(next(dst.glob("*.xml"))))
        log(f"{dst.name}: inputs {[(sorted(i.get_names()), i.get_partial_shape()) for i in m.inputs]} "
            f"outputs {[(sorted(o.get_names()), o.get_partial_shape()) for o in m.outputs]}")
    meta = (FP32_DIR / "metadata.yaml").read_text()
    assert re.search(r"^end2end: true", meta, re.M), "FP32 IR is not end2end"
    assert re.search(r"^end2end: false", (RAW_DIR / "metadata.yaml").read_text(), re.M), "raw IR claims end2end"
    rep["export"] = {"wall_s": round(time.time() - t0, 1)}


# ---------------------------------------------------------------------------------------------------------------- int8
def stage_int8(a, rep):
    """Through the same code as `deer-worker export --int8`: worker preprocessing for calibration,
    NNCF MIXED. Both ignored scopes are built and compared (on this model they came out identical)."""
    from worker.tools.export import calibration_tensors, quantize_ir

    t0 = time.time()
    files = sorted((Path(a.work) / "data" / "images" / "train").glob("*.jpg"))[: a.n_calib]
    tensors = calibration_tensors(files, 320, clahe=False)
    rep.setdefault("int8", {})["n_calib"] = len(tensors)
    for scope in ("none", "head"):
        quantize_ir(FP32_DIR, Path(a.work) / f"int8_{scope}" / f"{STEM}_int8_openvino_model", tensors,
                    ignored_scope=scope)
        log(f"INT8 ignored scope {scope} done")
    shutil.rmtree(INT8_DIR, ignore_errors=True)
    shutil.copytree(Path(a.work) / "int8_none" / f"{STEM}_int8_openvino_model", INT8_DIR)
    rep["int8"]["chosen_ignored_scope"] = "none"
    rep["int8"]["wall_s"] = round(time.time() - t0, 1)


# ---------------------------------------------------------------------------------------------------------------- eval
_PREC = {}


def _force_precision(prec):
    """Patch openvino.Core.compile_model so ultralytics' OpenVINO backend compiles with the given precision hint."""
    import openvino as ov

    if not hasattr(ov.Core, "_orig_compile_model"):
        ov.Core._orig_compile_model = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kw):
        config = dict(config or {})
        if prec is not None:
            config["INFERENCE_PRECISION_HINT"] = prec
        cm = ov.Core._orig_compile_model(self, model, device_name, config, **kw)
        _PREC["last"] = cm.get_property("INFERENCE_PRECISION_HINT").to_string()
        return cm

    ov.Core.compile_model = compile_model


def val_ir(ir_dir, prec):
    from ultralytics import YOLO

    _force_precision(prec)
    r = YOLO(str(ir_dir), task="detect").val(data=str(HELDOUT_YAML),
                                             imgsz=320, batch=1, device="cpu", plots=False, verbose=False,
                                             project="/tmp/deer-demo-val", name="val")  # keep runs/ out of the repo
    bp = r.box
    return {"mAP50": round(float(bp.map50), 4), "mAP50-95": round(float(bp.map), 4), "precision": round(float(bp.mp), 4),
            "recall": round(float(bp.mr), 4), "ov_precision": _PREC.get("last"),
            "ms_inference": round(float(r.speed["inference"]), 2)}


def bench(xml, extra):
    exe = Path(sys.executable).parent / "benchmark_app"
    cmd = [str(exe), "-m", str(xml), "-d", "CPU", "-hint", "latency", *extra, "-t", "10"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    med = re.search(r"Median:\s+([\d.]+) ms", out)
    thr = re.search(r"Throughput:\s+([\d.]+) FPS", out)
    return {"cmd": " ".join(["benchmark_app", "-m", str(Path(xml).relative_to(HERE.parent.parent)) if Path(xml).is_relative_to(HERE.parent.parent) else str(xml), *cmd[3:]]),
            "median_ms": float(med.group(1)) if med else None, "fps": float(thr.group(1)) if thr else None}


def stage_eval(a, rep):
    import openvino as ov

    t0 = time.time()
    ev = rep.setdefault("eval", {})
    ev["fp32_f32"] = val_ir(FP32_DIR, ov.Type.f32)
    ev["fp32_default"] = val_ir(FP32_DIR, None)
    ev["raw_f32"] = val_ir(RAW_DIR, ov.Type.f32)
    cands = {}
    for variant in ("none", "head"):  # ignored scopes built by stage_int8; non-quantized ops pinned to f32
        d = Path(a.work) / f"int8_{variant}" / f"{STEM}_int8_openvino_model"
        cands[variant] = {"val": val_ir(d, ov.Type.f32), "bench": bench(d / f"{STEM}.xml", ["-infer_precision", "f32"])}
        log(f"INT8 {variant}: {cands[variant]}")
    ev["int8_candidates"] = cands
    # pick: accuracy first (mAP50-95 within 0.01 counts as a tie), then latency
    best = max(cands, key=lambda k: (round(cands[k]["val"]["mAP50-95"] / 0.01), -cands[k]["bench"]["median_ms"]))
    ev["int8_choice"] = best
    shutil.rmtree(INT8_DIR, ignore_errors=True)
    shutil.copytree(Path(a.work) / f"int8_{best}" / f"{STEM}_int8_openvino_model", INT8_DIR)
    ev["int8"] = cands[best]["val"]
    xml = next(FP32_DIR.glob("*.xml"))
    ev["bench_fp32_f32"] = bench(xml, ["-infer_precision", "f32"])
    ev["bench_fp32_default"] = bench(xml, [])
    ev["bench_int8"] = cands[best]["bench"]
    ev["wall_s"] = round(time.time() - t0, 1)
    (HERE / "heldout" / "labels.cache").unlink(missing_ok=True)  # ultralytics writes it next to labels/


def versions():
    import nncf
    import openvino
    import torch
    import ultralytics

    return {"ultralytics": ultralytics.__version__, "torch": torch.__version__, "openvino": openvino.__version__,
            "nncf": nncf.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/deer-demo-data", help="scratch dir (dataset, runs, exports); not the repo")
    ap.add_argument("--stage", default="all", choices=["all", "data", "train", "finetune", "export", "int8", "eval"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sample-seed", type=int, default=7)
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-val", type=int, default=60)
    ap.add_argument("--n-heldout", type=int, default=50)
    ap.add_argument("--n-calib", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=32)
    ap.add_argument("--finetune-epochs", type=int, default=36)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    os.chdir(HERE.parent.parent)  # repo root, so heldout.yaml's relative path resolves
    rep = load_report()
    rep.setdefault("commands", []).append("YOLO_OFFLINE=1 .venv/bin/python models/demo/build.py " + " ".join(sys.argv[1:]))
    stages = ["data", "train", "finetune", "export", "int8", "eval"] if a.stage == "all" else [a.stage]
    for s in stages:
        log(f"stage {s}")
        globals()[f"stage_{s}"](a, rep)
        rep["versions"] = versions()
        save_report(rep)
    log("done")


if __name__ == "__main__":
    main()
