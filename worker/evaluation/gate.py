"""The accuracy gate (validate, export, promote and tune): a model's scores on a labelled split, through the
served path (Detector.detect at ultralytics val's settings, scored by metrics.py), and whether its drop
against a reference stays within the limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.errors import InputError
from worker.evaluation.dataset import labels_to_truth
from worker.evaluation.metrics import DetectionMetrics, GroundTruth, MetricsAccumulator

GATE_METRICS = ("mAP50", "mAP50-95")
DEFAULT_MAX_DROP_MAP50 = 0.003  # 0.3 points
DEFAULT_MAX_DROP_MAP = 0.005  # 0.5 points


def gate_limits(max_drop_map50: float, max_drop_map: float) -> dict[str, float]:
    """The largest drop each gate metric may show, in fractions (0.003 = 0.3 points)."""
    return {"mAP50": max_drop_map50, "mAP50-95": max_drop_map}


def within_gate(drop: dict[str, float], limits: dict[str, float]) -> bool:
    """The accuracy gate (validate, export, promote, tune): no metric drops more than its limit."""
    return all(drop[k] <= limits[k] + 1e-9 for k in GATE_METRICS)


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
                   progress=None) -> ModelResult:
    """Run every image through a fresh Detector (the served path) and score it against `labels` (normalised,
    per image); `progress`, if given, is stepped once per image."""
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


def results_table(results: list[ModelResult]) -> str:
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
