"""`deer-worker` command line. Each subcommand imports only what it needs (detect needs no Redis)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
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
    import numpy as np

    from worker.tools.annotate import draw
    from worker.cameras import load_camera_book
    from worker.inference.detector import Detector
    from worker.inference.runtime import CompileOptions

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
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            cv2.imwrite(str(Path(args.save_dir) / (Path(image_path).stem + ".jpg")), draw(image, result.detections))
    return 1 if failures else 0


_OVERRIDE_KEYS = ("redis_url", "model", "precision", "threads", "batch", "queue")


def _overrides(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key, None) for key in _OVERRIDE_KEYS if getattr(args, key, None) is not None}


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args, redis_url=args.redis_url, batch=args.batch, queue=args.queue)
    if args.workers == 1:
        from worker.serve.service import run_worker

        return run_worker(config, args.worker_index, burst=args.burst)
    from worker.serve.pool import WorkerPool

    return WorkerPool(config, args.config, _overrides(args), args.workers, log_level=args.log_level).run_forever()


def cmd_enqueue(args: argparse.Namespace) -> int:
    from worker.jobqueue.connections import connect
    from worker.jobqueue.producer import enqueue_snapshot

    config = _config(args, redis_url=args.redis_url, queue=args.queue)
    connection = connect(config.redis_url)
    pubsub = None
    if args.wait:
        pubsub = connection.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(config.results_channel)
    ids = []
    for image in args.images:
        job = enqueue_snapshot(connection, image, args.camera, queue=config.queue, by_path=args.by_path,
                               inline=args.inline,
                               max_snapshot_bytes=config.max_snapshot_bytes, job_timeout=config.job_timeout,
                               result_ttl=config.result_ttl, failure_ttl=config.failure_ttl,
                               queued_ttl=config.queued_ttl, retries=config.retries)
        ids.append(job.id)
        print(f"{image}: enqueued job {job.id} on {config.queue}")
    if pubsub is None:
        return 0
    pending, deadline = set(ids), time.monotonic() + args.wait
    while pending and time.monotonic() < deadline:
        raw = pubsub.get_message(timeout=0.5)
        if raw and json.loads(raw["data"])["job_id"] in pending:
            print(raw["data"].decode())
            pending.discard(json.loads(raw["data"])["job_id"])
    return 1 if pending else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.tools.demo import run_demo

    config = _config(args)
    images = [Path(p) for p in args.images] if args.images else None
    return run_demo(config, args.config, redis_url=args.redis_url, workers=args.workers, images=images,
                    repeat=args.repeat, embedded=args.embedded, log_level="INFO" if args.verbose else "WARNING",
                    zones=args.zones)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deer-worker", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO; -v = DEBUG)")
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

    p = sub.add_parser("run", help="consume snapshot jobs: one worker, or a pool with --workers N")
    _add_model_args(p)
    p.add_argument("--workers", type=int, default=1, help="worker processes (1 = this process, as systemd runs)")
    p.add_argument("--worker-index", type=int, default=0, help="index of this worker (metrics port offset, name)")
    p.add_argument("--batch", choices=["1", "4", "auto"], default=None, help="drain up to 4 queued jobs per run")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (redis://, rediss://, unix://)")
    p.add_argument("--queue", help="queue name")
    p.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("enqueue", help="enqueue snapshot files as jobs")
    p.add_argument("images", nargs="+")
    p.add_argument("--camera", required=True, help="camera id, e.g. 10cea9e4511f")
    p.add_argument("--redis", dest="redis_url", help="Redis URL")
    p.add_argument("--queue", help="queue name")
    p.add_argument("--config", help="worker.yaml (limits and TTLs)")
    p.add_argument("--by-path", action="store_true", help="send the file path, not the bytes (same host only)")
    p.add_argument("--inline", action="store_true", help="put the bytes in the job as base64 (default: a Redis key)")
    p.add_argument("--wait", type=float, default=0, help="wait this many seconds for the results and print them")
    p.set_defaults(func=cmd_enqueue)

    p = sub.add_parser("demo", help="embedded Redis + workers + the sample snapshots, end to end")
    _add_model_args(p)
    p.add_argument("--redis", dest="redis_url", help="use this Redis instead of an embedded one")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--images", nargs="*", help="snapshots to send (default: models/demo/samples)")
    p.add_argument("--repeat", type=int, default=1, help="send the images this many times")
    p.add_argument("--zones", default="models/demo/zones.yaml",
                   help="camera settings (default: the demo model's, threshold 0.25)")
    p.add_argument("--embedded", choices=["auto", "redis-server", "fakeredis"], default="auto",
                   help="embedded server kind (auto: redis-server if on PATH, else in-process)")
    p.set_defaults(func=cmd_demo)

    # Model tooling: each module owns its arguments; imported lazily so the worker stays light.
    for name, help_text in (("export", "export a trained .pt to FP32 and (--int8) calibrated INT8 IR (export extra)"),
                            ("validate", "mAP/precision/recall of IR models through the worker's own pipeline"),
                            ("bench", "raw inference limit vs full service time, FP32 vs INT8, batch 1 vs 4"),
                            ("doctor", "check this machine, OpenVINO, the model, Redis and the configs")):
        p = sub.add_parser(name, help=help_text)
        _tool(name).add_arguments(p)
        p.set_defaults(func=lambda args, name=name: _tool(name).run(args))
    return parser


def _tool(name: str):
    import importlib

    return importlib.import_module(f"worker.tools.{name}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = args.log_level or ("DEBUG" if args.verbose else "INFO")
    args.log_level = level
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DeerWorkerError as exc:
        print(f"deer-worker: {exc.kind}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
