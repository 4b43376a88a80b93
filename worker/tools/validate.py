"""`deer-worker validate`: accuracy of one or more models on a labelled split.

The reference is the trained `.pt` itself when one is given (`--model best.pt`, needs the export extra): it
is scored exactly as ultralytics `val` scores it by default (its default head, one-to-many + NMS; val's rect
batch shapes; conf 0.001, IoU 0.7). Every IR is then scored the SAME way (ultralytics val of the IR: same
matcher, conf, IoU and shapes; a dynamic IR gets val's rect shapes, a static one square), and the gate
compares those: exit 1 when an IR's mAP50 drops more than --max-drop-map50 (0.003 = 0.3 points) or its
mAP50-95 more than --max-drop-map (0.005) below the .pt. The served-path scores (below) are shown beside
them and do not gate when a .pt is given.

Without a .pt the first --model is the reference and the gate compares served-path scores.

The served path: every image goes through `Detector.detect` (same decode, letterbox, OpenVINO precision
and postprocessing as the worker), at ultralytics val's settings (conf 0.001, iou 0.7, max_det 300), and
is scored by worker.evaluation.metrics, which reproduces ultralytics' DetMetrics. Versus `YOLO(ir).val()`:
identical when boxes are left unclipped and JPEGs decoded at full size (tests/tools/test_validate.py). The
served path clips boxes to the image (as ultralytics predict does; its val does not), which raised
mAP50-95 by ~2 points on the demo split (many deer at the image border; mAP50 moved < 0.2 points); with
--reduced-decode it also decodes JPEGs at reduced size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from worker.errors import MissingFileError
from worker.evaluation.dataset import label_path, load_data_yaml, read_labels
from worker.evaluation.gate import (DEFAULT_MAX_DROP_MAP, DEFAULT_MAX_DROP_MAP50, ModelResult, evaluate_model,
                                    GATE_METRICS, gate_limits, results_table, within_gate)
from worker.evaluation.host import host_line
from worker.evaluation.isa import proxy_note
from worker.evaluation.reports import emit_report, require_report_folder, table_stream
from worker.tools.progress import Progress

# --- the command ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.tools.options import add_isa, add_output, add_precision, confidence, count

    add_isa(parser, "avx2", "the user's CPU: the gate's scores as AVX2 kernels compute them (INT8 without VNNI "
                            "differs); ms_per_image is then a proxy")
    parser.add_argument("--model", action="append", required=True,
                        help="OpenVINO IR directory or .xml, or the trained .pt (export extra; then it is the "
                             "reference); repeat to compare (without a .pt the first is the reference)")
    parser.add_argument("--data", required=True, help="ultralytics data yaml (path, train/val/test, names)")
    parser.add_argument("--split", default="val", choices=["val", "test", "train", "minival"],
                        help="which split of the data yaml to score (default val)")
    parser.add_argument("--max-drop-map50", "--max-drop", dest="max_drop_map50", type=float,
                        default=DEFAULT_MAX_DROP_MAP50,
                        help="largest allowed mAP50 drop vs the reference, a fraction (default 0.003 = 0.3 points)")
    parser.add_argument("--max-drop-map", type=float, default=DEFAULT_MAX_DROP_MAP,
                        help="largest allowed mAP50-95 drop vs the reference, a fraction (default 0.005 = 0.5 points)")
    parser.add_argument("--imgsz", type=int, default=None,
                        help="input long side for ultralytics val of the .pt and the IRs (default: the .pt's training imgsz)")
    parser.add_argument("--conf", type=confidence, default=0.001, help="confidence threshold (ultralytics val: 0.001)")
    parser.add_argument("--iou", type=confidence, default=0.7, help="NMS IoU for raw-head models (ultralytics val: 0.7)")
    parser.add_argument("--max-det", type=count, default=300, help="detections kept per image (ultralytics val: 300)")
    add_precision(parser, "f32", "inference precision, as served (default f32)")
    parser.add_argument("--threads", type=count, default=0, help="inference threads (0 = all cores)")
    parser.add_argument("--reduced-decode", action=argparse.BooleanOptionalAction, default=False,
                        help="decode large JPEGs at 1/2, 1/4, 1/8 size, as a worker with reduced_decode: true "
                             "does (default off, as the worker's default; ultralytics val decodes at full size)")
    parser.add_argument("--clahe", action="store_true", help="apply the CLAHE preprocessing cameras can enable")
    add_output(parser, report=True)


def _checkpoint_result(pt: Path, data: Path, split: str, imgsz: int) -> ModelResult:
    """The .pt's reference row: ultralytics val at its defaults (no served-path metrics: PyTorch is not served)."""
    from worker.tools.export import require_export_extra
    from worker.tools.reference import ultralytics_val

    require_export_extra(int8=False)
    started = time.time()
    scores = ultralytics_val(pt, data, imgsz, split=split)
    return ModelResult(str(pt), pt.name, "pt", "f32", None, 0.0, ultralytics={
        **scores, "scored_by": "ultralytics val, the .pt's default head (one-to-many + NMS)",
        "wall_s": round(time.time() - started, 1)})


def run(args: argparse.Namespace) -> int:
    """0 = every model within the gate of the reference; 1 = a model dropped more. Config errors raise."""
    from worker.errors import UsageError
    from worker.tools.reference import checkpoint_imgsz, ultralytics_val

    host = host_line()  # as the run starts (ms_per_image depends on it)
    require_report_folder(args.out)
    checkpoints = [m for m in args.model if Path(m).suffix == ".pt"]
    if len(checkpoints) > 1:
        raise UsageError(f"one .pt reference at a time, got {len(checkpoints)}: {', '.join(checkpoints)}")
    for pt in checkpoints:
        if not Path(pt).is_file():
            raise MissingFileError(f"checkpoint {pt} not found: pass the trained ultralytics .pt")
    data = load_data_yaml(args.data)
    images = data.images(args.split)
    labels = [read_labels(label_path(image), len(data.names)) for image in images]  # bad labels fail before any model
    started = time.time()
    irs = [m for m in args.model if m not in checkpoints]
    progress = Progress(len(images) * len(irs), "validate")
    results = []
    if checkpoints:
        pt = Path(checkpoints[0])
        imgsz = args.imgsz or checkpoint_imgsz(pt)
        results.append(_checkpoint_result(pt, data.yaml, args.split, imgsz))
    for model in irs:
        result = evaluate_model(model, images, labels, data.names, conf=args.conf, iou=args.iou,
                                max_det=args.max_det, precision=args.precision, threads=args.threads,
                                reduced_decode=args.reduced_decode, clahe=args.clahe, progress=progress)
        if checkpoints:  # scored the .pt's way too: that is what gates
            result.ultralytics = ultralytics_val(model, data.yaml, imgsz, split=args.split, precision=args.precision)
        results.append(result)
    reference = results[0]
    limits = gate_limits(args.max_drop_map50, args.max_drop_map)
    failed = [r for r in results[1:] if not within_gate(r.drop(reference), limits)]
    gated_by = ("ultralytics val of each model (the .pt's own way)" if checkpoints
                else "the served path (first model is the reference)")

    out = table_stream(args.json)
    print(host, file=out)
    if proxy_note():  # capped: every figure below is a proxy
        print(proxy_note(), file=out)
    print(f"data {data.yaml} split {args.split}: {len(images)} images, {sum(len(x) for x in labels)} boxes, "
          f"classes {', '.join(data.names)}; conf {args.conf} iou {args.iou} max_det {args.max_det}, "
          f"reduced decode {'on' if args.reduced_decode else 'off'}", file=out)
    print(results_table(results), file=out)
    for r in results:
        for s in r.skipped:
            print(f"{r.name}: skipped {s['image']}: {s['error']}: {s['message']}", file=out)
    if len(results) > 1:
        verdict = "FAIL" if failed else "PASS"
        print(f"gate vs {reference.name}, scored by {gated_by}: mAP50 drop <= {args.max_drop_map50 * 100:g} points, "
              f"mAP50-95 drop <= {args.max_drop_map * 100:g} points: "
              f"{verdict}" + (f" ({', '.join(r.name for r in failed)})" if failed else ""), file=out)
    if args.json or args.out:
        report = {
            "host": host, "data": str(data.yaml), "split": args.split, "images": len(images),
            "settings": {"conf": args.conf, "iou": args.iou, "max_det": args.max_det, "precision": args.precision,
                         "reduced_decode": args.reduced_decode, "clahe": args.clahe},
            "gate": {"metrics": list(GATE_METRICS), "max_drop": limits, "reference": reference.model,
                     "scored_by": gated_by, "passed": not failed, "failed": [r.model for r in failed]},
            "wall_s": round(time.time() - started, 2),
            "models": [{"model": r.model, "name": r.name, "weights": r.weights, "precision": r.precision,
                        "metrics": r.metrics.as_dict() if r.metrics else None, "ultralytics": r.ultralytics,
                        "drop": r.drop(reference), "ms_per_image": r.ms_per_image, "skipped": r.skipped}
                       for r in results],
        }
        emit_report(report, as_json=args.json, out=args.out)
    return 1 if failed else 0
