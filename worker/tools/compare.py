"""`deer-worker compare`: two models on the same unlabelled snapshots, through the served path.

Both models run every image through `Detector.detect` at the camera's settings (threshold, ROI,
CLAHE), as a worker would serve them. Per image and in total: deer_detected agreement (both / A only /
B only / neither), boxes matched at IoU >= 0.5 (same class; count, mean IoU, confidence delta
distribution, boxes only one model found), each model's service time p50/p95. `--save-dir` writes a
side-by-side annotated image of every disagreement and an index.html sorted by how badly they
disagree. With `--data` it is `validate` of both models (the first the reference) plus the gallery
over that split's images. A trained `.pt` (either side) runs through ultralytics PyTorch predict instead
(CheckpointModel: the tools layer only, never the worker), e.g. a retrained checkpoint against the model
in production, or a checkpoint against its own export.

The agreement measure (`agreement`, `summarize`) is the reusable part: `tune` and the shadow runner
score two answers for the same snapshot with it.
"""

from __future__ import annotations

import argparse
import html
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from worker.constants import DEFAULT_MAX_DETECTIONS
from worker.errors import ConfigError, DeerWorkerError
from worker.evaluation import gate as accuracy_gate
from worker.evaluation.agreement import MATCH_IOU, Agreement, agreement, summarize
from worker.evaluation.dataset import label_path, load_data_yaml, read_labels
from worker.evaluation.host import host_line
from worker.evaluation.isa import proxy_note
from worker.evaluation.reports import emit_report, require_report_folder, table_stream
from worker.evaluation.timing import service_times
from worker.inference.detections import Detections
from worker.model.card import resolve_alert_classes

# --- running the two models -------------------------------------------------------------------------
@dataclass
class ImageComparison:
    image: str
    agreement: Agreement | None
    a: Detections | None = None
    b: Detections | None = None
    error: str | None = None  # the image could not be read or decoded (same for both models)


@dataclass(frozen=True)
class CheckpointSpec:
    name: str
    version: str
    names: tuple[str, ...]
    alert_classes: tuple[str, ...]  # as the card beside it resolves them, else the default rule
    weights: str = "pt"


class CheckpointModel:
    """A trained .pt answering like Detector.detect, through ultralytics PyTorch predict (CPU, f32; the rect
    letterbox at the checkpoint's training imgsz; its default one-to-many head + NMS). The snapshot is
    decoded by the worker's decoder, and the camera's ROI, CLAHE, threshold and classes apply as the
    worker applies them. What the checkpoint was trained with (CLAHE, default threshold, NMS IoU, version)
    comes from the MODEL_CARD.json beside it when that card names it as its checkpoint (`deer-worker export`
    writes one), else the camera's settings alone decide. Tools only: needs the export extra (torch)."""

    precision = "f32"

    def __init__(self, pt: Path, config) -> None:
        from worker.constants import DEFAULT_IOU
        from worker.tools.export import require_export_extra
        from worker.tools.reference import checkpoint_imgsz, predict_arrays, ultralytics_model

        if not pt.is_file():
            raise ConfigError(f"--model {pt}: no such checkpoint")
        require_export_extra(False, needed_by=f"compare of {pt.name}")
        card = self._card_spec(pt)
        self.yolo = ultralytics_model(pt)
        names = tuple(str(self.yolo.names[k]) for k in sorted(self.yolo.names))
        self.spec = CheckpointSpec(pt.stem, card.version if card else "", names,
                                   card.alert_classes if card else resolve_alert_classes(None, names))
        self.preprocessing, self.confidence = (card.preprocessing, card.confidence) if card else (None, None)
        self.iou = config.iou or (card.iou if card and card.iou is not None else DEFAULT_IOU)
        self.imgsz, self.max_pixels = checkpoint_imgsz(pt), config.max_pixels
        # ultralytics sets its predictor up at the first predict: not a snapshot's service time
        predict_arrays(self.yolo, np.full((self.imgsz, self.imgsz, 3), 114, np.uint8), self.imgsz, 0.5, self.iou)

    @staticmethod
    def _card_spec(pt: Path):
        """The served model's spec of the model card beside `pt`, when that card names `pt` as its checkpoint."""
        from worker.errors import ModelLoadError
        from worker.inference.runtime import load_spec
        from worker.model.card import ModelCard, has_card

        if not has_card(pt.parent):
            return None
        try:
            if ModelCard.read(pt.parent).checkpoint != pt.name:
                return None
        except ModelLoadError:
            return None
        return load_spec(pt.parent)[0]

    def check_cameras(self, book) -> None:
        from worker.cameras import check_against_model

        for settings in [book.default, *book.cameras.values()]:
            unknown = [n for n in settings.classes or () if n not in self.spec.names]
            if unknown:
                raise ConfigError(f"camera {settings.camera_id or 'default'}: classes {unknown} are not in the "
                                  f"checkpoint's names {list(self.spec.names)}")
            check_against_model(settings, self.preprocessing)

    def detect(self, data: bytes, settings):
        from worker.cameras import with_model_defaults
        from worker.inference.detector import DetectionResult, StageTimings
        from worker.inference.imagecodec import decode
        from worker.inference.preprocess import apply_clahe
        from worker.tools.reference import predict_arrays

        started = time.perf_counter()
        settings = with_model_defaults(settings, self.preprocessing, self.confidence)
        decoded = decode(data, max_pixels=self.max_pixels)
        height, width = decoded.image.shape[:2]
        x0, y0, x1, y1 = settings.roi.to_pixels(width, height) if settings.roi else (0, 0, width, height)
        image = np.ascontiguousarray(decoded.image[y0:y1, x0:x1])
        if settings.clahe:
            image = apply_clahe(image, settings.clahe_clip, settings.clahe_tiles)
        classes = [self.spec.names.index(n) for n in settings.classes] if settings.classes else None
        xyxy, confidence, class_id = predict_arrays(self.yolo, image, self.imgsz, settings.confidence, self.iou,
                                                    classes=classes, max_det=DEFAULT_MAX_DETECTIONS)
        detections = Detections((xyxy + np.array([x0, y0, x0, y0])).astype(np.float32), confidence.astype(np.float32),
                                class_id.astype(np.int32), self.spec.names)
        timings = StageTimings(infer=time.perf_counter() - started)  # decode to boxes, as one
        return DetectionResult(detections, timings, 1, width, height)


def _build(config, model: str):
    from worker.inference.build import build_detector

    if Path(model).suffix == ".pt":
        return CheckpointModel(config.resolve(model), config)
    return build_detector(config, model=model, batch="1")


def compare_models(config, model_a: str, model_b: str, images: list[Path], *, camera: str | None = None,
                   zones: str | None = None, progress=None) -> tuple[list[ImageComparison], dict]:
    """Both models on every image at the camera's settings -> per-image comparisons and the report's
    model section (name, version, weights, precision, service times)."""
    from worker.cameras import load_camera_book

    detectors = [_build(config, model_a), _build(config, model_b)]
    book = load_camera_book(config.resolve(zones or config.zones))
    settings = book.get(camera or "")
    for detector in detectors:
        detector.check_cameras(book)
    alerts = [detector.spec.alert_classes for detector in detectors]  # each model's own deer decision
    times: list[list[float]] = [[], []]
    rows: list[ImageComparison] = []
    for image in images:
        try:
            data = image.read_bytes()
            answers = []
            for detector, spent in zip(detectors, times):
                result = detector.detect(data, settings)
                spent.append(result.timings.total)
                answers.append(result.detections)
        except (OSError, DeerWorkerError) as exc:
            rows.append(ImageComparison(str(image), None, error=f"{getattr(exc, 'kind', 'io')}: {exc}"))
        else:
            rows.append(ImageComparison(str(image), agreement(*answers, alert_a=alerts[0], alert_b=alerts[1]), *answers))
        if progress:
            progress.step()
    models = [{"model": str(path), "name": d.spec.name, "version": d.spec.version, "weights": d.spec.weights,
               "precision": d.precision, "service_time": service_times(spent)}
              for path, d, spent in zip((model_a, model_b), detectors, times)]
    return rows, {"a": models[0], "b": models[1]}


# --- the gallery ------------------------------------------------------------------------------------
def write_gallery(save_dir: Path, rows: list[ImageComparison], models: dict) -> list[Path]:
    """A side-by-side image (A left, B right) of every disagreement, and index.html, worst first."""
    import cv2

    from worker.tools.annotate import draw

    disagreements = sorted((r for r in rows if r.agreement is not None and not r.agreement.agrees),
                           key=lambda r: -r.agreement.severity)
    written, entries = [], []
    for rank, row in enumerate(disagreements, 1):
        image = cv2.imread(row.image, cv2.IMREAD_COLOR)
        if image is None:
            continue
        panels = []
        for side, detections in (("a", row.a), ("b", row.b)):
            panel = draw(image, detections)
            label = f"{side.upper()}: {models[side]['name']} ({models[side]['weights']})"
            scale = max(0.6, image.shape[1] / 1200)
            cv2.putText(panel, label, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        max(1, int(2 * scale)), cv2.LINE_AA)
            panels.append(panel)
        target = save_dir / f"{rank:04d}_{Path(row.image).stem}.jpg"
        cv2.imwrite(str(target), np.hstack(panels))
        written.append(target)
        a = row.agreement
        entries.append(
            f"<tr><td>{rank}</td><td>{a.severity:.2f}</td><td>{html.escape(a.deer)}</td><td>{a.matched}</td>"
            f"<td>{a.a_unmatched}</td><td>{a.b_unmatched}</td><td>{html.escape(row.image)}</td>"
            f"<td><a href=\"{html.escape(target.name)}\"><img src=\"{html.escape(target.name)}\" width=\"640\"></a>"
            f"</td></tr>")
    title = f"A = {html.escape(models['a']['model'])} vs B = {html.escape(models['b']['model'])}"
    page = (f"<!doctype html><meta charset=\"utf-8\"><title>compare: {title}</title><h1>{title}</h1>"
            f"<p>{len(disagreements)} disagreements of {len(rows)} images, worst first (A left, B right).</p>"
            "<table border=1 cellpadding=4><tr><th>#</th><th>severity</th><th>deer</th><th>matched</th>"
            "<th>A only</th><th>B only</th><th>image</th><th>side by side</th></tr>"
            + "".join(entries) + "</table>\n")
    (save_dir / "index.html").write_text(page)
    return written


# --- the command ------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.config import DEFAULT_CONFIG
    from worker.tools.options import add_images, add_isa, add_output, add_precision, count

    add_isa(parser, "native", "two models as this host's worker serves them; avx2 for the agreement and speed an "
                              "AVX2-only CPU would see")

    parser.add_argument("--model", action="append", required=True,
                        help="an OpenVINO IR directory / .xml, a model folder, or a trained .pt (run by ultralytics "
                             "PyTorch predict; needs the export extra); give exactly two (A, then B)")
    add_images(parser, "snapshots (JPEG/PNG) or folders of them; none when --data is given")
    parser.add_argument("--camera", help="camera id whose settings (threshold, ROI, CLAHE) both models use")
    parser.add_argument("--zones", help="camera settings file (default: the config's zones)")
    parser.add_argument("--data", help="ultralytics data yaml: also validate both models (A the reference) "
                                       "and compare on that split's images")
    parser.add_argument("--split", default="val", choices=["val", "test", "train", "minival"],
                        help="split of --data (default val)")
    add_precision(parser, "f32", "inference precision of both models (default f32)")
    parser.add_argument("--threads", type=count, default=None, help="inference threads (0 = all cores)")
    parser.add_argument("--config", help=f"worker.yaml (default {DEFAULT_CONFIG} when present)")
    parser.add_argument("--save-dir", help="write a side-by-side image of every disagreement and index.html here")
    add_output(parser, report=True)


def _table(report: dict) -> str:
    s, a, b = report["summary"], report["models"]["a"], report["models"]["b"]
    deer, boxes, delta = s["deer_detected"], s["boxes"], s["confidence_delta"]
    lines = [f"A: {a['model']} ({a['name']} {a['version']}, {a['weights']}/{a['precision']}) "
             f"p50 {a['service_time']['p50_ms']} ms p95 {a['service_time']['p95_ms']} ms",
             f"B: {b['model']} ({b['name']} {b['version']}, {b['weights']}/{b['precision']}) "
             f"p50 {b['service_time']['p50_ms']} ms p95 {b['service_time']['p95_ms']} ms",
             f"images {s['images']}: deer_detected both {deer['both']}, A only {deer['a_only']}, "
             f"B only {deer['b_only']}, neither {deer['neither']} (agreement {s['deer_agreement']}); "
             f"{s['images_agreeing']} images agree box for box",
             f"boxes matched at IoU>={MATCH_IOU}: {boxes['matched']} (mean IoU {boxes['mean_iou']}), "
             f"A only {boxes['a_only']}, B only {boxes['b_only']}; confidence B-A mean {delta['mean']} "
             f"p5 {delta['p5']} p50 {delta['p50']} p95 {delta['p95']} max |d| {delta['max_abs']}"]
    lines += [f"{row['image']}: ERROR {row['error']}" for row in report["images"] if row.get("error")]
    if report.get("gallery"):
        lines.append(f"gallery: {report['gallery']['index']} ({report['gallery']['disagreements']} disagreements)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """0 = compared; 1 = some images could not be read. Config errors raise (exit 2)."""
    from worker.config import default_config_path, load_config
    from worker.errors import UsageError
    from worker.tools.options import expand_images, images_of, make_dir
    from worker.tools.progress import Progress

    host = host_line()  # as the run starts (the service times depend on it)

    if len(args.model) != 2:
        raise UsageError(f"compare takes exactly two --model (A and B), got {len(args.model)}")
    require_report_folder(args.out)
    if args.data and any(Path(m).suffix == ".pt" for m in args.model):
        raise UsageError("--data scores served models (validate's path); a .pt is scored against its IRs by "
                         "deer-worker export --data")
    images = expand_images(images_of(args), missing_ok=True)
    validation = None
    if args.data:
        data = load_data_yaml(args.data)
        split_images = data.images(args.split)
        labels = [read_labels(label_path(i), len(data.names)) for i in split_images]
        progress = Progress(2 * len(split_images), "validate")
        scored = [accuracy_gate.evaluate_model(m, split_images, labels, data.names, precision=args.precision,
                                          threads=args.threads or 0, progress=progress) for m in args.model]
        validation = {"data": str(data.yaml), "split": args.split,
                      "models": [{"model": r.model, "metrics": r.metrics.as_dict(), "drop": r.drop(scored[0])}
                                 for r in scored]}
        images += split_images
    if not images:
        raise UsageError("no images: give snapshots or folders, or --data")
    save_dir = make_dir(args.save_dir, "--save-dir folder") if args.save_dir else None
    config = load_config(default_config_path(args.config),
                         overrides={"precision": args.precision, "threads": args.threads})
    started = time.time()
    rows, models = compare_models(config, args.model[0], args.model[1], images, camera=args.camera,
                                  zones=args.zones, progress=Progress(len(images), "compare"))
    report = {"host": host, "models": models, "camera": args.camera, "match_iou": MATCH_IOU,
              "summary": summarize([r.agreement for r in rows if r.agreement is not None]),
              "images": [{"image": r.image, "error": r.error} if r.error else
                         {"image": r.image, **asdict(r.agreement), "agrees": r.agreement.agrees,
                          "severity": round(r.agreement.severity, 4),
                          "a_detections": r.a.to_json(), "b_detections": r.b.to_json()} for r in rows],
              "wall_s": round(time.time() - started, 2)}
    if validation:
        report["validation"] = validation
    if save_dir:
        written = write_gallery(save_dir, rows, models)
        report["gallery"] = {"index": str(save_dir / "index.html"), "disagreements": len(written),
                             "images": [str(p) for p in written]}
    print(host, *([proxy_note()] if proxy_note() else []), _table(report), sep="\n", file=table_stream(args.json))
    emit_report(report, as_json=args.json, out=args.out)
    return 1 if any(r.error for r in rows) else 0
