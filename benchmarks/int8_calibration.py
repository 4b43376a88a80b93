#!/usr/bin/env python3
"""INT8 calibration variants of one FP32 IR, each scored against it: the FP32 IR and every variant by
ultralytics `val` (benchmarks/fidelity_table.py's scoring: conf 0.001, IoU 0.7, batch 1, f32 pinned).
A variant is COUNT:SHAPES:SCOPE: COUNT calibration images spread evenly over --calib, SHAPES "mixed" (the
worker's rect shapes, every third 1:1, as `deer-worker export` calibrates a dynamic IR) or "square", SCOPE
the ignored scope ("none" or "head", `deer-worker export --ignored-scope`). Quantized by the export's own
code (worker.tools.export.quantize_ir); the IRs go to --work.

    YOLO_OFFLINE=1 .venv/bin/python benchmarks/int8_calibration.py \\
        models/demo/deer-yolo26n_dynamic_raw_fp32_openvino_model --calib /tmp/deer-demo-data/data_v3/images/train \\
        --data models/demo/heldout300.yaml --variants 200:mixed:none,200:square:none,500:mixed:none,200:mixed:head
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

from worker.evaluation.host import host_line, speed_index  # noqa: E402
from worker.evaluation.isa import proxy_note  # noqa: E402
from worker.tools.export import calibration_tensors, quantize_ir  # noqa: E402
from worker.tools.options import add_isa, rerun_or_fail, this_command  # noqa: E402
from worker.tools.reference import stdout_to_stderr, ultralytics_val  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fp32", help="the FP32 IR folder")
    parser.add_argument("--calib", required=True, help="folder of calibration images (*.jpg)")
    parser.add_argument("--data", required=True, help="ultralytics data yaml of the held-out split")
    parser.add_argument("--variants", required=True, help="comma-separated COUNT:mixed|square:none|head")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--work", default="/tmp/int8-calibration", help="where the INT8 IRs are written")
    add_isa(parser, "avx2", "as validate: INT8 scores as the user's AVX2 CPU computes them (no VNNI)")
    args = parser.parse_args(argv)
    rerun = rerun_or_fail(args, this_command(sys.argv[1:] if argv is None else argv, __file__))
    if rerun is not None:  # scored in a capped child
        return rerun

    fp32 = Path(args.fp32)
    images = sorted(Path(args.calib).glob("*.jpg"))
    started = time.time()
    reference = ultralytics_val(fp32, args.data, args.imgsz)
    rows = []
    for variant in args.variants.split(","):
        count, shapes, scope = variant.split(":")
        step = len(images) / int(count)
        tensors = calibration_tensors([images[int(i * step)] for i in range(int(count))], args.imgsz,
                                      square=shapes == "square")
        with stdout_to_stderr():  # nncf prints its progress on stdout: keep stdout the JSON alone
            out = quantize_ir(fp32, Path(args.work) / f"{count}_{shapes}_{scope}_openvino_model", tensors,
                              ignored_scope=scope)
        scores = ultralytics_val(out, args.data, args.imgsz)
        rows.append({"variant": variant, **scores,
                     "d_mAP50_points": round((scores["mAP50"] - reference["mAP50"]) * 100, 2),
                     "d_mAP50-95_points": round((scores["mAP50-95"] - reference["mAP50-95"]) * 100, 2)})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"fp32": str(fp32), "fp32_scores": reference, "calib": args.calib, "data": args.data,
                      "host": host_line(speed_index()), "isa_note": proxy_note(), "wall_s": round(time.time() - started, 1), "rows": rows},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
