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
is scored by worker.tools.evaluation, which reproduces ultralytics' DetMetrics. Versus `YOLO(ir).val()`:
identical when boxes are left unclipped and JPEGs decoded at full size (tests/tools/test_validate.py). The
served path clips boxes to the image (as ultralytics predict does; its val does not), which raised
mAP50-95 by ~2 points on the demo split (many deer at the image border; mAP50 moved < 0.2 points); with
--reduced-decode it also decodes JPEGs at reduced size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.config import read_yaml, resolve_path
from worker.errors import ConfigError, InputError, MissingFileError
from worker.tools.progress import Progress
from worker.tools.evaluation import (
    DetectionMetrics,
    GroundTruth,
    MetricsAccumulator,
    label_path,
    labels_to_truth,
    list_images,
    read_labels,
)

GATE_METRICS = ("mAP50", "mAP50-95")
DEFAULT_MAX_DROP_MAP50 = 0.003  # 0.3 points
DEFAULT_MAX_DROP_MAP = 0.005  # 0.5 points


def gate_limits(max_drop_map50: float, max_drop_map: float) -> dict[str, float]:
    """The largest drop each gate metric may show, in fractions (0.003 = 0.3 points)."""
    return {"mAP50": max_drop_map50, "mAP50-95": max_drop_map}


def within_gate(drop: dict[str, float], limits: dict[str, float]) -> bool:
    """The accuracy gate (validate, export, promote, tune): no metric drops more than its limit."""
    return all(drop[k] <= limits[k] + 1e-9 for k in GATE_METRICS)


# --- the dataset yaml -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """An ultralytics data yaml: dataset root, split entries and class names."""

    yaml: Path
    root: Path
    names: tuple[str, ...]
    splits: dict[str, list[str]] = field(default_factory=dict)

    def images(self, split: str) -> list[Path]:
        if not self.splits.get(split):
            raise ConfigError(f"{self.yaml}: no '{split}' split (has: {', '.join(sorted(self.splits)) or 'none'})")
        images: list[Path] = []
        for entry in self.splits[split]:
            path = Path(entry).expanduser()
            images += list_images(path if path.is_absolute() else self.root / path)
        return images


def _dataset_root(yaml_path: Path, raw: object) -> Path:
    """`path:` taken relative to the yaml's directory first, then the cwd, then the project root.

    ultralytics resolves a relative `path` against the cwd only (then its datasets dir), so yamls
    written for it (like models/demo/heldout.yaml, repo-root relative) still work here from any cwd.
    """
    if raw in (None, ""):
        return yaml_path.parent
    path = Path(str(raw)).expanduser()
    if path.is_absolute():
        return path
    for candidate in (yaml_path.parent / path, Path.cwd() / path, resolve_path(path)):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"{yaml_path}: path: {raw} not found next to the yaml, in the cwd or in the project root")


def load_data_yaml(path: str | Path) -> DataSpec:
    yaml_path = resolve_path(path)
    data = read_yaml(yaml_path, "data yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{yaml_path}: expected a mapping (path, train, val, names)")
    raw_names = data.get("names")
    if isinstance(raw_names, dict):
        names = tuple(str(raw_names[k]) for k in sorted(raw_names, key=int))
    elif isinstance(raw_names, list):
        names = tuple(str(n) for n in raw_names)
    elif isinstance(data.get("nc"), int):
        names = tuple(f"class_{i}" for i in range(data["nc"]))
    else:
        raise ConfigError(f"{yaml_path}: names: expected a list or an id -> name mapping (or nc)")
    if isinstance(data.get("nc"), int) and data["nc"] != len(names):
        raise ConfigError(f"{yaml_path}: nc: {data['nc']} but {len(names)} names")
    splits = {}
    for split in ("train", "val", "test", "minival"):
        entry = data.get(split)
        if entry:
            splits[split] = [str(e) for e in entry] if isinstance(entry, list) else [str(entry)]
    return DataSpec(yaml_path, _dataset_root(yaml_path, data.get("path")), names, splits)


# --- running a model ------------------------------------------------------------------------------
@dataclass
class ModelResult:
    model: str
    name: str
    weights: str
    precision: str
    metrics: DetectionMetrics | None  # None for the .pt row (scored by ultralytics only)
    ms_per_image: float  # median full service time (decode + preprocess + infer + postprocess)
    skipped: list[dict] = field(default_factory=list)
    ultralytics: dict | None = None  # ultralytics val's scores, when a .pt is the reference

    @property
    def scores(self) -> dict[str, float]:
        """What the gate compares: ultralytics val's scores when measured (vs a .pt), else the served path's."""
        if self.ultralytics is not None:
            return {k: self.ultralytics[k] for k in GATE_METRICS}
        return {"mAP50": self.metrics.map50, "mAP50-95": self.metrics.map50_95}

    def drop(self, reference: ModelResult) -> dict[str, float]:
        ours, theirs = self.scores, reference.scores
        return {k: round(theirs[k] - ours[k], 6) for k in GATE_METRICS}


def evaluate_model(model: str | Path, images: list[Path], labels: list[np.ndarray], names: tuple[str, ...], *,
                   conf: float = 0.001, iou: float = 0.7, max_det: int = 300, precision: str = "f32",
                   threads: int = 0, reduced_decode: bool = False, clahe: bool = False,
                   progress: Progress | None = None) -> ModelResult:
    """Run every image through a fresh Detector and score it against `labels` (normalised, per image)."""
    from worker.cameras import CameraSettings
    from worker.config import WorkerConfig
    from worker.inference.build import build_detector

    served = WorkerConfig(model=str(model), precision=precision, threads=threads, reduced_decode=reduced_decode)
    detector = build_detector(served, batch="1", iou=iou, max_detections=max_det)
    # As ultralytics val: ground truth of classes the model cannot predict is left out.
    model_classes = len(detector.class_names)
    settings = CameraSettings(clahe=clahe, confidence=conf)
    accumulator = MetricsAccumulator(names)
    skipped, times = [], []
    for image, rows in zip(images, labels):
        try:
            result = detector.detect(image.read_bytes(), settings, confidence=conf)
        except (OSError, InputError) as exc:
            skipped.append({"image": str(image), "error": getattr(exc, "kind", "io"), "message": str(exc)})
            continue
        truth = labels_to_truth(rows, result.image_width, result.image_height)
        if len(truth) and truth.classes.max() >= model_classes:
            keep = truth.classes < model_classes
            truth = GroundTruth(truth.boxes[keep], truth.classes[keep])
        accumulator.add_detections(result.detections, truth)
        times.append(result.timings.total)
        if progress:
            progress.step()
    return ModelResult(str(model), detector.spec.name, detector.spec.weights, detector.precision,
                       accumulator.compute(), float(np.median(times)) * 1e3 if times else 0.0, skipped)


# --- the command ----------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.tools.options import add_output, add_precision

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
    parser.add_argument("--conf", type=float, default=0.001, help="confidence threshold (ultralytics val: 0.001)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU for raw-head models (ultralytics val: 0.7)")
    parser.add_argument("--max-det", type=int, default=300, help="detections kept per image (ultralytics val: 300)")
    add_precision(parser, "f32", "inference precision, as served (default f32)")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0 = all cores)")
    parser.add_argument("--reduced-decode", action=argparse.BooleanOptionalAction, default=False,
                        help="decode large JPEGs at 1/2, 1/4, 1/8 size, as a worker with reduced_decode: true "
                             "does (default off, as the worker's default; ultralytics val decodes at full size)")
    parser.add_argument("--clahe", action="store_true", help="apply the CLAHE preprocessing cameras can enable")
    add_output(parser, report=True)


def _table(results: list[ModelResult]) -> str:
    """Served-path scores per model; with a .pt also ultralytics val's (uval), which then gate. The d
    columns are changes vs the reference in the gated scores (negative = worse)."""
    reference = results[0]
    with_ultralytics = reference.ultralytics is not None
    header = (f"{'model':<44} {'weights':<7} {'prec':<5} {'images':>6} {'inst':>5} {'P':>6} {'R':>6} "
              f"{'mAP50':>6} {'mAP50-95':>8} " + (f"{'uval50':>7} {'uval50-95':>9} " if with_ultralytics else "")
              + f"{'dmAP50':>7} {'dmAP50-95':>9} {'ms/img':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        m = r.metrics
        drop = r.drop(reference)
        drops = (f"{'(ref)':>7} {'':>9}" if r is reference
                 else f"{0.0 - drop['mAP50']:>+7.3f} {0.0 - drop['mAP50-95']:>+9.3f}")  # 0.0 - : no "-0.000"
        served = (f"{m.images:>6} {m.instances:>5} {m.precision:>6.3f} {m.recall:>6.3f} {m.map50:>6.3f} {m.map50_95:>8.3f}"
                  if m else f"{'':>6} {'':>5} {'-':>6} {'-':>6} {'-':>6} {'-':>8}")
        uval = (f"{r.ultralytics['mAP50']:>7.3f} {r.ultralytics['mAP50-95']:>9.3f} " if r.ultralytics
                else f"{'-':>7} {'-':>9} ") if with_ultralytics else ""
        lines.append(f"{r.name[:44]:<44} {r.weights:<7} {r.precision:<5} {served} {uval}{drops} {r.ms_per_image:>7.1f}")
        if m and len(m.per_class) > 1:
            for c in m.per_class:
                lines.append(f"  {c.name[:42]:<42} {'':<7} {'':<5} {c.images:>6} {c.instances:>5} {c.precision:>6.3f} "
                             f"{c.recall:>6.3f} {c.map50:>6.3f} {c.map50_95:>8.3f}")
    return "\n".join(lines)


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
    from worker.tools.doctor import host_line
    from worker.tools.options import require_report_folder, write_report
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

    out = sys.stderr if args.json else sys.stdout  # --json: stdout carries the JSON alone
    print(host, file=out)
    print(f"data {data.yaml} split {args.split}: {len(images)} images, {sum(len(x) for x in labels)} boxes, "
          f"classes {', '.join(data.names)}; conf {args.conf} iou {args.iou} max_det {args.max_det}, "
          f"reduced decode {'on' if args.reduced_decode else 'off'}", file=out)
    print(_table(results), file=out)
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
        text = json.dumps(report, indent=2)
        if args.json:
            print(text)
        if args.out:
            write_report(args.out, text + "\n")
    return 1 if failed else 0
