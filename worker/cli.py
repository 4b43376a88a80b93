"""`deer-worker` command line. Each subcommand imports only what it needs (detect needs no Redis).

Conventions (worker/tools/options.py): images are positional; `--json` prints JSON on stdout instead of
the table; a report file is `--out FILE`. An expected failure is one line on stderr,
`deer-worker: <kind>: <what and what to do>`, and a non-zero exit; -v adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from worker.errors import DeerWorkerError, RedisUnavailableError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ERROR_EXIT = 2  # an expected failure or a refused invocation (argparse's code); 1 = some results failed


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line too, in the same form as every other failure."""

    def error(self, message: str):  # type: ignore[override]
        print(f"deer-worker: usage: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(ERROR_EXIT)


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _global_options(top_level: bool) -> argparse.ArgumentParser:
    """-v and --log-level, accepted before and after the subcommand. After it they default to
    SUPPRESS, so a subcommand that is not given them keeps what was given before it."""
    options = argparse.ArgumentParser(add_help=False)
    unset = {} if top_level else {"default": argparse.SUPPRESS}
    options.add_argument("-v", "--verbose", action="store_true", **unset,
                         help="debug logging, and a traceback with an error line")
    options.add_argument("--log-level", type=_log_level, **({"default": None} if top_level else unset),
                         help=f"one of {', '.join(LOG_LEVELS)} (default INFO; -v = DEBUG)")
    return options


def _add_model_args(p: argparse.ArgumentParser,
                    default: str = "the config's, the demo INT8 model") -> None:
    from worker.config import DEFAULT_CONFIG
    from worker.tools.options import add_precision, count

    p.add_argument("--model", help=f"OpenVINO IR directory or .xml (default: {default})")
    add_precision(p, None, "inference precision (default f32: this CPU would silently use bf16 otherwise)")
    p.add_argument("--threads", type=count, default=None, help="inference threads (0 = all cores)")
    p.add_argument("--config", help=f"worker.yaml (default {DEFAULT_CONFIG} when present)")


def _config(args: argparse.Namespace, **extra):
    from worker.config import default_config_path, load_config

    overrides = {"model": getattr(args, "model", None), "precision": getattr(args, "precision", None),
                 "threads": getattr(args, "threads", None)}
    overrides.update(extra)
    return load_config(default_config_path(args.config), overrides=overrides)


def _annotated_path(save_dir: Path, image: Path, taken: set[Path]) -> Path:
    """<stem>.jpg in save_dir; same-stem images of one run (a/x.jpg, b/x.png) get <stem>-2.jpg, ..."""
    target, n = save_dir / f"{image.stem}.jpg", 1
    while target in taken:
        n += 1
        target = save_dir / f"{image.stem}-{n}.jpg"
    taken.add(target)
    return target


def cmd_detect(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from worker.cameras import load_camera_book
    from worker.inference.build import build_detector
    from worker.tools.annotate import draw
    from worker.tools.options import expand_images, make_dir

    config = _config(args)
    images = expand_images(args.images, missing_ok=True)  # a missing image is reported with the others
    save_dir = make_dir(args.save_dir, "--save-dir folder") if args.save_dir else None
    book = load_camera_book(config.resolve(args.zones or config.zones))
    detector = build_detector(config, batch="1")
    detector.check_cameras(book)
    settings = book.get(args.camera or "")
    failures, saved = 0, set()
    for image_path in map(str, images):
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
        if save_dir:
            target = _annotated_path(save_dir, Path(image_path), saved)
            if target.exists():
                logging.getLogger(__name__).warning("replacing %s (from an earlier run)", target)
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            cv2.imwrite(str(target), draw(image, result.detections))
    return 1 if failures else 0


_OVERRIDE_KEYS = ("redis_url", "model", "precision", "threads", "batch", "queue")


def _overrides(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key, None) for key in _OVERRIDE_KEYS if getattr(args, key, None) is not None}


def cmd_run(args: argparse.Namespace) -> int:
    from worker.errors import UsageError

    config = _config(args, redis_url=args.redis_url, batch=args.batch, queue=args.queue)
    workers = config.workers if args.workers is None else args.workers  # the flag beats worker.yaml
    if workers == 1:
        from worker.serve.service import run_worker

        return run_worker(config, args.worker_index or 0, burst=args.burst, stop=getattr(args, "stop", None))
    for given, option in ((args.burst, "--burst"), (args.worker_index is not None, "--worker-index")):
        if given:
            raise UsageError(f"{option} applies to one worker process, not a pool of {workers}: "
                             "add --workers 1, or leave it out")
    from worker.serve.pool import WorkerPool

    return WorkerPool(config, args.config, _overrides(args), workers, log_level=args.log_level).run_forever(getattr(args, "stop", None))


def cmd_enqueue(args: argparse.Namespace) -> int:
    import redis

    from worker.config import redact_url
    from worker.jobqueue.connections import connect, ping
    from worker.jobqueue.producer import enqueue_snapshot
    from worker.tools.options import expand_images

    config = _config(args, redis_url=args.redis_url, queue=args.queue)
    images = expand_images(args.images)  # every file found before the first job is enqueued
    connection = connect(config.redis_url)
    unreachable = RedisUnavailableError(f"{redact_url(config.redis_url)} does not answer: start Redis or fix "
                                        "--redis / redis_url")
    if not ping(connection):
        raise unreachable
    pubsub = None
    try:
        if args.wait:
            pubsub = connection.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(config.results_channel)
        ids = []
        for image in images:
            job = enqueue_snapshot(connection, image, args.camera, queue=config.queue, by_path=args.by_path,
                                   inline=args.inline, max_snapshot_bytes=config.max_snapshot_bytes,
                                   job_timeout=config.job_timeout, result_ttl=config.result_ttl,
                                   failure_ttl=config.failure_ttl, queued_ttl=config.queued_ttl,
                                   retries=config.retries, priority=args.priority, conf=args.conf,
                                   classes=args.classes, camera_settings=args.camera_settings,
                                   max_age=args.max_age)
            ids.append(job.id)
            print(json.dumps({"image": str(image), "job_id": job.id, "queue": config.queue}) if args.json
                  else f"{image}: enqueued job {job.id} on {config.queue}")
        if pubsub is None:
            return 0
        pending, deadline = set(ids), time.monotonic() + args.wait
        while pending and time.monotonic() < deadline:
            raw = pubsub.get_message(timeout=0.5)
            if raw and json.loads(raw["data"])["job_id"] in pending:
                print(raw["data"].decode())
                pending.discard(json.loads(raw["data"])["job_id"])
        return 1 if pending else 0
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # Redis went away part-way
        raise unreachable from exc


def cmd_gateway(args: argparse.Namespace) -> int:
    import os

    from worker.errors import MissingDependencyError, MissingFileError

    try:
        from worker.serve.gateway import GatewaySettings, run_gateway
    except ImportError as exc:
        raise MissingDependencyError(f"the gateway needs the gateway extra ({exc.name} is missing): "
                                     "pip install 'deer-worker[gateway]'") from exc
    api_key = os.environ.get("DEER_GATEWAY_API_KEY") or None
    if args.api_key_file:
        try:
            api_key = Path(args.api_key_file).read_text().strip() or None
        except FileNotFoundError:
            raise MissingFileError(f"--api-key-file {args.api_key_file}: no such file") from None
    config = _config(args, redis_url=args.redis_url, queue=args.queue)
    settings = GatewaySettings(timeout=args.timeout, max_waiting=args.max_waiting, max_body=args.max_body,
                               api_key=api_key)
    return run_gateway(config, settings, args.host, args.port, args.log_level)


def cmd_mqtt(args: argparse.Namespace) -> int:
    from worker.errors import MissingDependencyError

    try:
        from worker.serve.mqtt_bridge import run_bridge
    except ImportError as exc:
        raise MissingDependencyError(f"the MQTT bridge needs the mqtt extra ({exc.name} is missing): "
                                     "pip install 'deer-worker[mqtt]'") from exc
    from worker.config import load_config, resolve_path
    from worker.serve.mqtt_config import DEFAULT_BRIDGE_CONFIG, load_bridge_config

    path = args.config or (DEFAULT_BRIDGE_CONFIG if resolve_path(DEFAULT_BRIDGE_CONFIG).exists() else None)
    config = load_bridge_config(path, overrides={"mqtt_url": args.mqtt, "redis_url": args.redis_url,
                                                 "metrics_port": args.metrics_port})
    worker = load_config(config.worker_config, overrides={"redis_url": config.redis_url or None})
    return run_bridge(config, worker)


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.tools.demo import DEMO_MODEL, run_demo
    from worker.tools.options import expand_images, images_of

    if args.model is None and args.config is None:  # the demo model as its card serves it, like its zones
        args.model = DEMO_MODEL
    config = _config(args, redis_url=args.redis_url)  # checks the URL's scheme like any other setting
    images = expand_images(images_of(args)) or None
    return run_demo(config, args.config, redis_url=config.redis_url if args.redis_url else None, workers=args.workers,
                    images=images, repeat=args.repeat, embedded=args.embedded,
                    log_level="INFO" if args.verbose else "WARNING", zones=args.zones, json_lines=args.json)


def build_parser() -> argparse.ArgumentParser:
    from worker.constants import BATCH_MODES
    from worker.tools.options import add_images, add_output, confidence, count, positive_number, seconds

    parser = _Parser(prog="deer-worker", description=__doc__, parents=[_global_options(top_level=True)],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do; `deer-worker COMMAND --help` lists its options")

    def command(name: str, help_text: str, func, *, runs_inference: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[_global_options(top_level=False)])
        p.set_defaults(func=func, runs_inference=runs_inference)
        return p

    p = command("detect", "run the detector on image files", cmd_detect, runs_inference=True)
    add_images(p, "JPEG/PNG snapshots, or folders of them", optional=False)
    _add_model_args(p)
    p.add_argument("--camera", help="camera id whose settings (ROI, CLAHE, threshold) apply")
    p.add_argument("--zones", help="camera settings file (default: the config's zones, configs/zones.yaml)")
    p.add_argument("--conf", type=confidence, default=None, help="confidence threshold (overrides the camera's)")
    add_output(p)
    p.add_argument("--save-dir", help="write annotated images here (<stem>.jpg; same stems get -2, -3, ...)")

    p = command("run", "consume snapshot jobs: one worker, or a pool with --workers N", cmd_run,
                runs_inference=True)
    _add_model_args(p)
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="worker processes (default: the config's workers, 1 = this process, as systemd runs)")
    p.add_argument("--worker-index", type=count, default=None,
                   help="index of this worker (metrics port offset, name); one worker only")
    p.add_argument("--batch", choices=BATCH_MODES, default=None,
                   help="drain up to 4 queued jobs per run: 4, 1, or auto (4 only where warm-up shows it pays)")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (redis://, rediss://, unix://, redis+sentinel://)")
    p.add_argument("--queue", help="queue name")
    p.add_argument("--burst", action="store_true",
                   help="exit when the queue is empty (one worker only; gives up on an unreachable Redis)")

    p = command("enqueue", "enqueue snapshot files as jobs", cmd_enqueue)
    add_images(p, "JPEG/PNG snapshots, or folders of them", optional=False)
    p.add_argument("--camera", required=True, help="camera id, e.g. 10cea9e4511f")
    p.add_argument("--redis", dest="redis_url", help="Redis URL")
    p.add_argument("--queue", help="queue name")
    p.add_argument("--config", help="worker.yaml (limits and TTLs)")
    p.add_argument("--by-path", action="store_true", help="send the file path, not the bytes (same host only)")
    p.add_argument("--inline", action="store_true", help="put the bytes in the job as base64 (default: a Redis key)")
    p.add_argument("--wait", type=seconds, default=0, help="wait this many seconds for the results and print them")
    p.add_argument("--json", action="store_true", help="print each enqueued job as a JSON line")
    p.add_argument("--priority", choices=["normal", "high"], default="normal",
                   help="high: at the front of the queue, ahead of a backlog (motion, doorbell, on demand)")
    p.add_argument("--conf", type=confidence, help="confidence threshold for these jobs (job contract v2)")
    p.add_argument("--classes", type=lambda text: [c for c in text.split(",") if c],
                   help="comma-separated class names to keep, e.g. deer,person (job contract v2)")
    p.add_argument("--camera-settings", type=json.loads,
                   help='JSON override of the camera\'s zones.yaml entry, e.g. \'{"clahe": true}\' (contract v2)')
    p.add_argument("--max-age", type=positive_number, help="seconds: drop these jobs if not taken within it (contract v2)")

    p = command("demo", "embedded Redis + workers + the sample snapshots, end to end", cmd_demo)
    add_images(p, "snapshots or folders to send (default: models/demo/samples)", legacy="--images")
    _add_model_args(p, "models/demo, the IR its MODEL_CARD.json serves; with --config, the config's")
    p.add_argument("--redis", dest="redis_url", help="use this Redis instead of an embedded one")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default 1)")
    p.add_argument("--repeat", type=_positive_int, default=1, help="send the images this many times")
    p.add_argument("--zones", default="models/demo/zones.yaml",
                   help="camera settings (default: the demo model's, threshold 0.25)")
    p.add_argument("--embedded", choices=["auto", "redis-server", "fakeredis"], default="auto",
                   help="embedded server kind (auto: redis-server if on PATH, else in-process)")
    p.add_argument("--json", action="store_true",
                   help="each result message as a JSON line on stdout (tables and summary go to stderr)")

    p = command("gateway", "HTTP front to the queue: the ml-detector's POST /detect and the Deepstack API "
                "(gateway extra)", cmd_gateway)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback; 0.0.0.0 in a container)")
    p.add_argument("--port", type=count, default=8001, help="port (default 8001, the ml-detector's)")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (redis://, rediss://, unix://, redis+sentinel://)")
    p.add_argument("--queue", help="queue name")
    p.add_argument("--config", help="worker.yaml (queue, results stream, limits, zones)")
    p.add_argument("--timeout", type=positive_number, default=25.0,
                   help="seconds a request waits for its result (504 after), also its job's max_age (default 25)")
    p.add_argument("--max-waiting", type=_positive_int, default=64,
                   help="requests in hand at once; one more gets 429 at once (default 64)")
    p.add_argument("--max-body", type=_positive_int, default=16 * 1024 * 1024,
                   help="bytes of one request body; larger gets 413 (default 16 MiB)")
    p.add_argument("--api-key-file", help="file holding the API key clients must send as X-API-Key "
                   "(or Deepstack's api_key); default: $DEER_GATEWAY_API_KEY, else no key")

    p = command("mqtt", "MQTT bridge: ring-mqtt snapshots in; results, ON/OFF and Home Assistant entities out "
                "(mqtt extra)", cmd_mqtt)
    p.add_argument("--mqtt", help="broker URL, mqtt://user:password@host:1883 or mqtts://... (default: the config's)")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (default: the config's, else worker.yaml's)")
    p.add_argument("--config", help="bridge settings, configs/mqtt.yaml (default: that file when present)")
    p.add_argument("--metrics-port", type=count, default=None, help="port of /metrics and /healthz (0 = off)")

    # Model lifecycle (issue 17): the desired model is state in Redis; each waits for every worker's answer.
    for name, help_text, rollback in (
            ("reload", "make every worker serve --model (switch between batches) and wait for their answers", False),
            ("rollback", "make every worker serve the model before the last reload/promote", True)):
        p = command(name, help_text, lambda args, name=name: getattr(_tool("lifecycle"), f"run_{name}")(args))
        _tool("lifecycle").add_reload_arguments(p, rollback=rollback)
    p = command("promote", "export a retrained .pt, gate it against production (no loss), compare on snapshots, "
                "reload every worker; exit 3 gate failed, 4 reload failed", lambda args: _tool("promote").run(args),
                runs_inference=True)
    _tool("promote").add_arguments(p)

    # Model tooling: each module owns its arguments; imported lazily so the worker stays light.
    for name, help_text, runs_inference in (
            ("export", "export a trained .pt to FP32 and (--int8) calibrated INT8 IR (export extra)", False),
            ("validate", "mAP/precision/recall of IR models through the worker's own pipeline", True),
            ("bench", "raw inference limit vs full service time, FP32 vs INT8, batch 1 vs 4", True),
            ("doctor", "check this machine, OpenVINO, the model, Redis and the configs", True),
            ("compare", "two models on the same snapshots: deer agreement, matched boxes, speed, a gallery", True),
            ("tune", "find the setting that meets a p95 latency budget on this host without losing accuracy", True)):
        p = command(name, help_text, lambda args, name=name: _tool(name).run(args), runs_inference=runs_inference)
        _tool(name).add_arguments(p)
    return parser


def _tool(name: str):
    import importlib

    return importlib.import_module(f"worker.tools.{name}")


def _fail(exc: BaseException, kind: str, verbose: bool) -> int:
    if verbose:
        traceback.print_exception(exc)
    message = " ".join(str(exc).split())  # one line, whatever the exception's text holds
    print(f"deer-worker: {kind}: {message}", file=sys.stderr)
    return ERROR_EXIT


def _redis_unreachable(exc: BaseException) -> bool:
    """A redis-py connection or timeout error (a command whose Redis went away or never answered); read from
    sys.modules: a command that never imported redis cannot have raised one."""
    redis = sys.modules.get("redis")
    return redis is not None and isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


def _command_word(argv: list[str]) -> str | None:
    """The subcommand, read before the parser is built (building it imports the tools)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stop = None
    if _command_word(argv) == "run":
        from worker.serve.stopping import StopRequest

        # First, before OpenVINO is imported: a stop during start-up is a clean exit 0, not a death by signal.
        stop = StopRequest().install()
    args = build_parser().parse_args(argv)
    args.stop = stop
    args.log_level = args.log_level or ("DEBUG" if args.verbose else "INFO")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from worker.tools.options import rerun_for_isa, this_command

        # Before any work: a --isa cap is only real in a process that starts with it (a child).
        code = rerun_for_isa(args, this_command(argv))
        if code is not None:
            return code
        if args.runs_inference:
            from worker.inference.build import tune_process

            tune_process()  # once, before any detector: this process serves inference
        return args.func(args)
    except DeerWorkerError as exc:
        return _fail(exc, exc.kind, args.verbose)
    except Exception as exc:
        if not _redis_unreachable(exc):
            raise
        error = RedisUnavailableError(f"Redis does not answer ({exc}): start Redis or fix --redis / redis_url")
        error.__cause__ = exc  # -v shows where it happened
        return _fail(error, error.kind, args.verbose)
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The console script and `python -m worker`: main(), then the process's exit.

    A `run` process ends with os._exit once main() has shut it down in order (threads joined, compiled
    models released, logs flushed): CPython's finalization would tear down what is left in no set order
    and end any daemon thread with pthread_exit, whose unwinding through native frames is one way a
    process aborts with std::terminate after its work is done. The status is the one main() returned.
    """
    argv = sys.argv[1:]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage exit, RQ's cold shutdown on a second signal
        code = exc.code
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    if _command_word(argv) != "run":
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
