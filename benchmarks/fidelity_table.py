#!/usr/bin/env python3
"""Fidelity table (issue 13): the trained .pt vs each of its IRs (end-to-end, raw + NMS; FP32 and INT8;
square static and rect dynamic), mAP50 / mAP50-95 on a held-out split, every row scored the same way:
ultralytics `val` at its defaults (conf 0.001, IoU 0.7, batch 1; rect batch shapes for the .pt and the
dynamic IRs, square for the static ones; a .pt runs its default head, one-to-many + NMS), every OpenVINO
compile pinned to f32 (int8 IRs: int8 + f32). Prints a markdown table (or --json). Needs the export extra.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/fidelity_table.py models/demo/deer-yolo26n.pt \
        --data models/demo/heldout.yaml --ir models/demo/*_openvino_model

With no --ir, every *_openvino_model folder beside the .pt. Each row names its own command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("YOLO_OFFLINE", "1")

import yaml  # noqa: E402

from worker.evaluation.host import host_line, speed_index  # noqa: E402
from worker.tools.reference import checkpoint_imgsz, ultralytics_val  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def describe_ir(ir: Path) -> dict:
    """head / weights / shape of an exported IR, from its metadata.yaml."""
    meta = yaml.safe_load((ir / "metadata.yaml").read_text())
    dynamic = bool(meta.get("dynamic") or (meta.get("args") or {}).get("dynamic"))
    return {"head": "end2end" if meta.get("end2end") else "raw + NMS",
            "weights": "int8" if meta.get("precision") == "int8" else "fp32",
            "shape": "rect (dynamic)" if dynamic else "square (static)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pt", help="the trained ultralytics checkpoint: the reference row")
    parser.add_argument("--data", required=True, help="ultralytics data yaml of the held-out split")
    parser.add_argument("--split", default="val", help="split to score (default val)")
    parser.add_argument("--ir", nargs="*", help="IR folders (default: every *_openvino_model beside the .pt)")
    parser.add_argument("--imgsz", type=int, help="input long side (default: the .pt's training imgsz)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of the markdown table")
    args = parser.parse_args(argv)

    pt = Path(args.pt)
    irs = [Path(p) for p in args.ir] if args.ir else sorted(pt.parent.glob("*_openvino_model"))
    imgsz = args.imgsz or checkpoint_imgsz(pt)
    started = time.time()
    rows = [{"model": str(pt), "head": "one-to-many + NMS (ultralytics default)", "weights": "fp32 (PyTorch)",
             "shape": "rect (val batch shapes)", **ultralytics_val(pt, args.data, imgsz, split=args.split)}]
    for ir in irs:
        rows.append({"model": str(ir), **describe_ir(ir), **ultralytics_val(ir, args.data, imgsz, split=args.split)})
    reference = rows[0]
    for row in rows:
        row["d_mAP50_points"] = round((row["mAP50"] - reference["mAP50"]) * 100, 2)
        row["d_mAP50-95_points"] = round((row["mAP50-95"] - reference["mAP50-95"]) * 100, 2)
        row["command"] = (f"YOLO({row['model']!r}{'' if row is reference else ', task=detect'}).val(data={args.data!r}, "
                          f"imgsz={imgsz}, batch=1, conf=0.001, iou=0.7) at f32")
    report = {"pt": str(pt), "data": args.data, "split": args.split, "imgsz": imgsz, "host": host_line(speed_index()),
              "scored_by": "ultralytics val defaults, OpenVINO f32 pinned", "wall_s": round(time.time() - started, 1),
              "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"`{pt}` on `{args.data}` ({args.split}), imgsz {imgsz}; {report['host']}\n")
    print("| model | head | weights | input | mAP50 | mAP50-95 | Δ mAP50 (pts) | Δ mAP50-95 (pts) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        delta = ("(reference)", "") if row is reference else (f"{row['d_mAP50_points']:+.2f}", f"{row['d_mAP50-95_points']:+.2f}")
        print(f"| `{Path(row['model']).name}` | {row['head']} | {row['weights']} | {row['shape']} | {row['mAP50']:.4f} | "
              f"{row['mAP50-95']:.4f} | {delta[0]} | {delta[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
