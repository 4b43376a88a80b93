"""`deer-worker` command line. Each subcommand imports only what it needs (detect needs no Redis)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from worker.errors import DeerWorkerError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="OpenVINO IR directory or .xml (default: the shipped demo INT8 model)")
    p.add_argument("--precision", choices=["f32", "bf16", "f16", "default"], default=None,
                   help="inference precision (default f32: this CPU would silently use bf16 otherwise)")
    p.add_argument("--threads", type=int, default=None, help="inference threads (0 = all cores)")
    p.add_argument("--config", help="worker.yaml (default configs/worker.yaml when present)")


def _config(args: argparse.Namespace, **extra):
    from worker.config import load_config, resolve_path

    path = args.config
    if path is None and resolve_path("configs/worker.yaml").exists():
        path = "configs/worker.yaml"
    overrides = {"model": getattr(args, "model", None), "precision": getattr(args, "precision", None),
                 "threads": getattr(args, "threads", None)}
    overrides.update(extra)
    return load_config(path, overrides=overrides)


def cmd_detect(args: argparse.Namespace) -> int:
    import cv2

    from worker.annotate import draw
    from worker.cameras import load_camera_book
    from worker.detector import Detector
    from worker.runtime import CompileOptions

    config = _config(args)
    book = load_camera_book(config.resolve(args.zones or config.zones))
    detector = Detector(config.resolve(config.model), batch="1", iou=config.iou, max_pixels=config.max_pixels,
                        reduced_decode=config.reduced_decode,
                        options=CompileOptions(threads=config.threads, pin_threads=config.pin_threads,
                                               precision=config.precision,
                                               cache_dir=str(Path(config.cache_dir).expanduser())))
    detector.check_cameras(book)
    settings = book.get(args.camera or "")
    if args.save_dir:
        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
    failures = 0
    for image_path in args.images:
        try:
            data = Path(image_path).read_bytes()
            result = detector.detect(data, settings, confidence=args.conf)
        except (OSError, DeerWorkerError) as exc:
            failures += 1
            kind = getattr(exc, "kind", "io")
            if args.json:
                print(json.dumps({"image": image_path, "error": kind, "message": str(exc)}))
            else:
                print(f"{image_path}: ERROR {kind}: {exc}")
            continue
        ms = {k: round(v * 1e3, 2) for k, v in result.timings.as_dict().items()}
        if args.json:
            print(json.dumps({"image": image_path, "width": result.image_width, "height": result.image_height,
                              "model": detector.spec.name, "precision": detector.precision,
                              "detections": result.detections.to_json(), "timings_ms": ms}))
        else:
            print(f"{image_path} ({result.image_width}x{result.image_height}): {len(result.detections)} detections"
                  f"  [decode {ms['decode']} ms, preprocess {ms['preprocess']} ms, infer {ms['infer']} ms, "
                  f"postprocess {ms['postprocess']} ms, total {ms['total']} ms]")
            for det in result.detections.to_json():
                print(f"  {det['class_name']:<10} {det['confidence']:.3f}  box {det['box']}")
        if args.save_dir:
            image = cv2.imdecode(__import__("numpy").frombuffer(data, "uint8"), cv2.IMREAD_COLOR)
            cv2.imwrite(str(Path(args.save_dir) / (Path(image_path).stem + ".jpg")), draw(image, result.detections))
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deer-worker", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="run the detector on image files")
    p.add_argument("images", nargs="+")
    _add_model_args(p)
    p.add_argument("--camera", help="camera id whose settings (ROI, CLAHE, threshold) apply")
    p.add_argument("--zones", help="camera settings file (default configs/zones.yaml)")
    p.add_argument("--conf", type=float, default=None, help="confidence threshold (overrides the camera's)")
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--save-dir", help="write annotated images here")
    p.set_defaults(func=cmd_detect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DeerWorkerError as exc:
        print(f"deer-worker: {exc.kind}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
