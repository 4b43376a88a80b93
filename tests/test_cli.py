"""deer-worker's front door: what the commands print, and every expected failure as exactly one line
`deer-worker: <kind>: ...` on stderr with a non-zero exit, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DEMO, FP32_MODEL, GENEROUS_BOUND, RAW_MODEL, ROOT, SAMPLES, TEST_REDIS_URL, free_port

SAMPLE = str(SAMPLES / "day_640x360_deer.jpg")
DEAD_REDIS = f"redis://127.0.0.1:{free_port()}/0"  # a loopback port nothing listens on: refused at once
CLI = ("-m", "worker")
# CI installs the export extra: this runs the CLI with `import ultralytics` failing as it would without it.
WITHOUT_EXPORT_EXTRA = ("-c", "import sys; sys.modules['ultralytics'] = None; from worker.cli import main; sys.exit(main())")
NO_METRICS = {"DEER_WORKER_METRICS_PORT": "0"}  # a worker started here must not take a port others use
# A burst worker gives up on Redis after burst_redis_wait: half a second here instead of the default 10.
QUICK_BURST = {**NO_METRICS, "DEER_WORKER_BURST_REDIS_WAIT": "0.5"}
# A command that loads a model, or a pool that starts several: generous, so only a hang reaches it.
CLI_BOUND = 5 * GENEROUS_BOUND
# Were a pool started by mistake, its workers (no model in the test's empty folder) would end it soon.
POOL_THAT_CANNOT_START = ["--model", "{tmp}", "--redis", DEAD_REDIS]


def _cli(*args, check=True, env=None, python_args=CLI, timeout=CLI_BOUND):
    import os

    return subprocess.run([sys.executable, *python_args, *args], cwd=ROOT, capture_output=True, text=True,
                          check=check, timeout=timeout, env={**os.environ, **(env or {})})


# --- expected failures ------------------------------------------------------------------------------
# (id, argv with {tmp} for the test's folder (a leading tuple: how python runs the CLI), extra environment,
#  exit code, error kind)
FAILURES = [
    ("enqueue-redis-down", ["enqueue", SAMPLE, "--camera", "c1", "--redis", DEAD_REDIS], {}, 2,
     "redis_unavailable"),
    ("enqueue-missing-file", ["enqueue", "{tmp}/missing.jpg", "--camera", "c1", "--redis", TEST_REDIS_URL], {}, 2,
     "missing_file"),
    ("enqueue-bad-url-scheme", ["enqueue", SAMPLE, "--camera", "c1", "--redis", "http://127.0.0.1:6379"], {}, 2,
     "config"),
    ("demo-redis-down", ["demo", "--redis", DEAD_REDIS], {}, 2, "redis_unavailable"),
    ("demo-no-redis-server", ["demo", "--embedded", "redis-server"], {"PATH": "{tmp}"}, 2, "missing_dependency"),
    ("export-without-extra", [WITHOUT_EXPORT_EXTRA, "export", str(DEMO / "deer-yolo26n.pt")], {}, 2,
     "missing_dependency"),
    ("export-missing-pt", ["export", "{tmp}/missing.pt"], {}, 2, "missing_file"),
    ("export-int8-without-data", ["export", str(DEMO / "deer-yolo26n.pt"), "--int8"], {}, 2, "usage"),
    ("bench-missing-image", ["bench", "{tmp}/missing.jpg"], {}, 2, "missing_file"),
    # refused at once, not after the measurements (which would outlast the test's timeout)
    ("bench-report-folder-missing", ["bench", "--seconds", "600", "--out", "{tmp}/no/such/folder/report.json"], {}, 2,
     "missing_file"),
    ("run-zero-workers", ["run", "--workers", "0"], {}, 2, "usage"),
    ("run-pool-burst", ["run", "--workers", "2", "--burst", *POOL_THAT_CANNOT_START], NO_METRICS, 2, "usage"),
    ("run-pool-worker-index", ["run", "--workers", "2", "--worker-index", "1", *POOL_THAT_CANNOT_START], NO_METRICS,
     2, "usage"),
    ("doctor-missing-image", ["doctor", "{tmp}/missing.jpg", "--redis", DEAD_REDIS], {}, 2, "missing_file"),
    ("config-unreadable", ["detect", SAMPLE, "--config", "{tmp}"], {}, 2, "config"),
    ("zones-unreadable", ["detect", SAMPLE, "--model", str(FP32_MODEL), "--zones", "{tmp}"], {}, 2, "config"),
    ("save-dir-not-writable", ["detect", SAMPLE, "--save-dir", "/proc/deer-worker-test/annotated"], {}, 2,
     "permission_denied"),
    ("log-level-after-command", ["detect", SAMPLE, "--log-level", "LOUD"], {}, 2, "usage"),
    # commands that reach Redis part-way, with no check of their own: the front door turns it into one line
    ("reload-redis-down", ["reload", "--model", "x", "--redis", DEAD_REDIS], {}, 2, "redis_unavailable"),
    ("promote-redis-down", ["promote", str(DEMO / "deer-yolo26n.pt"), "--data", str(DEMO / "heldout.yaml"),
                            "--redis", DEAD_REDIS], {}, 2, "redis_unavailable"),
    ("run-model-unloadable", ["run", "--model", "{tmp}", "--redis", DEAD_REDIS], NO_METRICS, 2, "model_load"),
    ("run-burst-redis-down", ["run", "--burst", "--redis", DEAD_REDIS, "--model", str(FP32_MODEL)], QUICK_BURST, 2,
     "redis_unavailable"),
    # option values the parser checks: a threshold that would find nothing, a negative time or count, a batch
    # the worker does not drain
    ("detect-conf-out-of-range", ["detect", SAMPLE, "--conf", "7"], {}, 2, "usage"),
    ("detect-conf-zero", ["detect", SAMPLE, "--conf", "0"], {}, 2, "usage"),
    ("enqueue-conf-out-of-range", ["enqueue", SAMPLE, "--camera", "c1", "--conf", "1.5"], {}, 2, "usage"),
    ("enqueue-negative-max-age", ["enqueue", SAMPLE, "--camera", "c1", "--max-age", "-1"], {}, 2, "usage"),
    ("enqueue-negative-wait", ["enqueue", SAMPLE, "--camera", "c1", "--wait", "-2"], {}, 2, "usage"),
    ("gateway-negative-timeout", ["gateway", "--timeout", "-5"], {}, 2, "usage"),
    ("run-negative-worker-index", ["run", "--worker-index", "-1"], {}, 2, "usage"),
    ("bench-batch-not-allowed", ["bench", "--batch", "1,3"], {}, 2, "usage"),
    ("bench-seconds-nan", ["bench", "--seconds", "nan"], {}, 2, "usage"),
    ("bench-unknown-isa", ["bench", "--isa", "sse41"], {}, 2, "usage"),
    ("validate-unknown-isa-env", ["validate", "--model", "m", "--data", "d.yaml"], {"DEER_WORKER_ISA": "avx512"}, 2,
     "config"),
    ("tune-batch-not-allowed", ["tune", "--batch", "2"], {}, 2, "usage"),
    ("validate-conf-out-of-range", ["validate", "--model", "m", "--data", "d.yaml", "--conf", "2"], {}, 2, "usage"),
    ("compare-negative-threads", ["compare", "--model", "a", "--model", "b", "--threads", "-1"], {}, 2, "usage"),
    ("reload-zero-timeout", ["reload", "--model", "x", "--timeout", "0"], {}, 2, "usage"),
    ("export-deer-class-the-model-lacks", ["export", str(DEMO / "deer-yolo26n.pt"), "--deer-class", "elk"], {}, 2,
     "usage"),
]


@pytest.mark.parametrize("argv, env, code, kind", [case[1:] for case in FAILURES], ids=[c[0] for c in FAILURES])
def test_an_expected_failure_is_one_line_and_no_traceback(tmp_path, argv, env, code, kind):
    python_args, argv = (argv[0], argv[1:]) if isinstance(argv[0], tuple) else (CLI, argv)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    out = _cli(*argv, check=False, env=env, python_args=python_args)
    ours = [line for line in out.stderr.splitlines() if line.startswith("deer-worker: ")]
    assert (out.returncode, len(ours)) == (code, 1), out.stderr
    assert ours[0].startswith(f"deer-worker: {kind}: ") and len(ours[0]) > len(f"deer-worker: {kind}: ") + 10
    assert "Traceback" not in out.stderr + out.stdout
    assert "terminate called" not in out.stderr  # std::terminate at exit: an abort, whatever the line said


def test_verbose_adds_the_traceback_to_the_line(tmp_path):
    out = _cli("enqueue", str(tmp_path / "missing.jpg"), "--camera", "c1", "-v", check=False)
    assert out.returncode == 2 and "Traceback" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("deer-worker: missing_file: ")


def test_a_pool_whose_workers_die_at_start_stops(tmp_path):
    """Each worker prints its own model_load line as it dies; the pool gives up after a few in a row."""
    out = _cli("run", "--workers", "2", "--model", str(tmp_path), "--redis", DEAD_REDIS, "--log-level", "WARNING",
               check=False, env=NO_METRICS)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "terminate called" not in out.stderr
    assert out.stderr.splitlines()[-1].startswith("deer-worker: worker_start: worker "), out.stderr[-2000:]
    assert out.stderr.count("deer-worker: worker_start:") == 1
    assert out.stderr.count("deer-worker: model_load:") >= 5
    assert "Traceback" not in out.stderr


# --- the parser: help, global options, one meaning per flag ---------------------------------------
def _subparsers():
    from worker.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    return parser, commands.choices


def test_every_option_of_every_command_has_help():
    parser, commands = _subparsers()
    assert set(commands) >= {"detect", "run", "enqueue", "demo", "export", "validate", "bench", "doctor", "gateway"}
    missing = [f"{name} {action.dest}" for name, p in [("deer-worker", parser), *commands.items()]
               for action in p._actions if not action.help]
    assert not missing


@pytest.mark.parametrize("argv", [["-v", "--log-level", "warning", "detect", "a.jpg"],
                                  ["detect", "a.jpg", "-v", "--log-level", "warning"],
                                  ["--log-level", "warning", "detect", "-v", "a.jpg"]])
def test_global_options_before_or_after_the_command(argv):
    from worker.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.verbose, args.log_level, args.images) == (True, "WARNING", ["a.jpg"])


def test_previous_spellings_still_parse_with_a_warning(capsys):
    from worker.cli import build_parser
    from worker.tools.options import images_of

    parse = build_parser().parse_args
    args = parse(["bench", "--images", "a.jpg", "b.jpg", "--json", "report.json"])
    assert (images_of(args), args.json, args.out) == (["a.jpg", "b.jpg"], False, "report.json")
    args = parse(["validate", "--model", "m", "--data", "d.yaml", "--json", "-"])
    assert (args.json, args.out) == (True, None)
    args = parse(["doctor", "--image", "a.jpg"])
    assert images_of(args) == ["a.jpg"]
    args = parse(["demo", "--images", "a.jpg"])
    assert images_of(args) == ["a.jpg"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 5 and all(w.startswith("deer-worker: warning: ") and "deprecated" in w for w in warnings)
    args = parse(["bench", "a.jpg", "--json", "--out", "r.json"])  # today's spelling: no warning
    assert (images_of(args), args.json, args.out) == (["a.jpg"], True, "r.json")
    assert capsys.readouterr().err == ""


def test_json_never_takes_an_image_for_a_report_name(capsys):
    from worker.cli import build_parser

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["bench", "--json", "a.jpg"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("deer-worker: usage: --json takes no file name")


def test_run_takes_workers_from_the_config_and_the_flag_beats_it(tmp_path, monkeypatch):
    import worker.serve.pool
    import worker.serve.service
    from worker.cli import build_parser

    started = []
    monkeypatch.setattr(worker.serve.service, "run_worker", lambda config, index, burst, stop: started.append(1) or 0)

    class FakePool:
        def __init__(self, config, config_path, overrides, workers, log_level):
            started.append(workers)

        def run_forever(self, stop):
            return 0

    monkeypatch.setattr(worker.serve.pool, "WorkerPool", FakePool)
    config = tmp_path / "w.yaml"
    config.write_text("workers: 3\n")
    for argv, expected in ((["run", "--config", str(config)], 3), (["run", "--config", str(config), "--workers", "1"], 1),
                           (["run", "--config", str(config), "--workers", "2"], 2)):
        started.clear()
        args = build_parser().parse_args(argv)
        args.log_level = "INFO"
        assert args.func(args) == 0 and started == [expected]


# --- what the commands do ----------------------------------------------------------------------------
ORANGE = np.array([0, 200, 255])  # worker.tools.annotate's box colour (BGR)


def _outline(box, shape):
    """(row, column) of each pixel on the box's top, left and right edges (the bottom may leave the image)."""
    height, width = shape[:2]
    x1, y1 = int(box[0]), int(box[1])
    x2, y2 = min(int(box[2]), width - 1), min(int(box[3]), height - 1)
    xs, ys = np.arange(x1, x2 + 1), np.arange(y1, y2 + 1)
    return np.concatenate([np.stack([np.full_like(xs, y1), xs], 1), np.stack([ys, np.full_like(ys, x1)], 1),
                           np.stack([ys, np.full_like(ys, x2)], 1)])


def test_detect_json_and_annotated_output(tmp_path):
    images = [str(SAMPLES / "day_1920x1080_deer.jpg"), str(SAMPLES / "night_640x360_empty.jpg")]
    out = _cli("detect", *images, "--model", str(FP32_MODEL), "--conf", "0.25", "--json", "--save-dir", str(tmp_path))
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [len(line["detections"]) >= 1 for line in lines] == [True, False]
    assert set(lines[0]["timings_ms"]) == {"decode", "preprocess", "infer", "postprocess", "total"}
    assert lines[0]["precision"] == "f32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day_1920x1080_deer.jpg", "night_640x360_empty.jpg"]
    for line in lines:
        source = cv2.imread(line["image"]).astype(int)
        drawn = cv2.imread(str(tmp_path / Path(line["image"]).name)).astype(int)
        assert drawn.shape == source.shape
        is_orange = np.abs(drawn - ORANGE).max(axis=2) < 60
        changed = np.abs(drawn - source).max(axis=2) > 40  # JPEG re-encoding moves a pixel by less
        boxes = np.zeros(source.shape[:2], bool)
        for det in line["detections"]:
            rows, cols = _outline(det["box"], source.shape).T
            assert is_orange[rows, cols].mean() > 0.8, det  # the box is drawn where the detection is
            assert is_orange[rows, cols].mean() > 3 * (np.abs(source[rows, cols] - ORANGE).max(axis=1) < 60).mean()
            x1, y1, x2, y2 = (int(v) for v in det["box"])
            boxes[max(0, y1 - 8):y2 + 8, max(0, x1 - 8):x2 + 8] = True  # the box and a margin
            boxes[max(0, y1 - 40):y1, max(0, x1 - 8):x1 + 250] = True  # its label, above it
        assert changed[~boxes].mean() < 1e-4  # and nothing drawn anywhere else


def test_detect_save_dir_keeps_same_stem_images_apart(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    copy = other / "day_640x360_deer.png"
    cv2.imwrite(str(copy), cv2.imread(SAMPLE))
    _cli("detect", SAMPLE, str(copy), "--model", str(FP32_MODEL), "--save-dir", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["day_640x360_deer-2.jpg", "day_640x360_deer.jpg"]


def test_detect_human_output_and_bad_file_exit_status(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = _cli("detect", str(SAMPLES / "night_640x360_deer.jpg"), str(bad), "--model", str(FP32_MODEL), "--conf", "0.25",
               check=False)
    assert out.returncode == 1
    assert "deer" in out.stdout and "decode" in out.stdout and "ERROR corrupt_image" in out.stdout


def test_bad_config_is_one_clear_error(tmp_path):
    config = tmp_path / "w.yaml"
    config.write_text("batch: 9\n")
    out = _cli("detect", str(SAMPLES / "day_640x360_deer.jpg"), "--config", str(config), check=False)
    assert out.returncode == 2 and out.stderr.startswith(f"deer-worker: config: {config}: batch: ")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("embedded", ["redis-server", "fakeredis"])
def test_demo_runs_end_to_end_without_a_redis_server(embedded):
    out = _cli("demo", "--model", str(FP32_MODEL), "--embedded", embedded)
    assert "all ok" in out.stdout and "p50 ms" in out.stdout
    assert out.stdout.count(" ok ") >= len(list(SAMPLES.iterdir()))


def test_demo_json_is_one_result_message_a_line_on_stdout():
    out = _cli("demo", str(SAMPLES / "day_640x360_deer.jpg"), str(SAMPLES / "night_640x360_empty.jpg"), "--model",
               str(FP32_MODEL), "--embedded", "fakeredis", "--json")
    messages = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(Path(m["file"]).name for m in messages) == ["day_640x360_deer.jpg", "night_640x360_empty.jpg"]
    assert all(m["status"] == "ok" for m in messages) and "all ok" in out.stderr


def test_demo_serves_the_model_it_names():
    """--model reaches the demo's workers (they read the config file again, which names another model)."""
    out = _cli("demo", str(SAMPLES / "day_640x360_deer.jpg"), "--model", str(RAW_MODEL), "--embedded", "fakeredis",
               "--json")
    [message] = [json.loads(line) for line in out.stdout.splitlines()]
    assert message["model"]["name"] == RAW_MODEL.name.removesuffix("_openvino_model"), message["model"]


def test_demo_serves_the_demo_package_by_default():
    """Without --model or --config: models/demo as its card serves it, whatever model the environment names
    (configs/worker.yaml names models/demo too, so only another model in the environment can tell)."""
    out = _cli("demo", str(SAMPLES / "day_640x360_deer.jpg"), "--embedded", "fakeredis", "--json",
               env={"DEER_WORKER_MODEL": str(RAW_MODEL)})
    [message] = [json.loads(line) for line in out.stdout.splitlines()]
    served = json.loads((DEMO / "MODEL_CARD.json").read_text())["serve"]
    assert message["model"]["name"] == served.removesuffix("_openvino_model"), message["model"]


def test_enqueue_puts_json_jobs_on_the_queue_and_refuses_bad_files(redis_conn, tmp_path):
    from rq import Queue

    from worker.jobqueue.connections import SERIALIZER

    out = _cli("enqueue", str(SAMPLES / "day_640x360_deer.jpg"), str(SAMPLES / "night_640x360_deer.jpg"),
               "--camera", "10cea9e4511f", "--redis", TEST_REDIS_URL, "--queue", "cli-q")
    assert out.stdout.count("enqueued job") == 2
    queue = Queue("cli-q", connection=redis_conn, serializer=SERIALIZER)
    assert queue.count == 2 and queue.jobs[0].args[0]["camera_id"] == "10cea9e4511f"
    bad = tmp_path / "x.gif"
    bad.write_bytes(b"GIF89a....")
    out = _cli("enqueue", str(bad), "--camera", "cam1", "--redis", TEST_REDIS_URL, "--queue", "cli-q", check=False)
    assert out.returncode == 2 and out.stderr.startswith("deer-worker: unsupported_format: ") and queue.count == 2
