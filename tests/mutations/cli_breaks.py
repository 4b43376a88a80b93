"""The deliberate breaks that tests/test_cli.py catches (issue 11's front door), run with run.py's machinery:

    .venv/bin/python tests/mutations/cli_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for the front door going back to what it did before: a traceback, a silent default, a
flag ignored. Kept apart from breaks.py so the two lists can be run on their own.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

T = "tests/test_cli.py::"
FAIL = T + "test_an_expected_failure_is_one_line_and_no_traceback"

CLI_BREAKS = [
    Break("pool-orphans-live-on", "worker/serve/pool.py",
          ", preexec_fn=partial(_die_with_parent, os.getpid()))", ")",
          "tests/serve/test_pool.py::test_workers_of_a_pool_killed_by_sigkill_stop_instead_of_running_on_as_orphans",
          "a SIGKILLed pool leaves its workers consuming the queue unsupervised"),
    Break("enqueue-redis-error-raw", "worker/cli.py", "unreachable = RedisUnavailableError(",
          "unreachable = RuntimeError(", FAIL + "[enqueue-redis-down]", "Redis down shown as a traceback"),
    Break("enqueue-reads-missing-file", "worker/cli.py",
          "images = expand_images(args.images)  # every file found", "images = expand_images(args.images, missing_ok=True)  #",
          FAIL + "[enqueue-missing-file]", "a missing image reaches the producer (FileNotFoundError)"),
    Break("url-scheme-unchecked", "worker/config.py",
          'if not self.redis_url.startswith(REDIS_SCHEMES):', "if False:",
          FAIL + "[enqueue-bad-url-scheme]", "a bad URL scheme reaches redis-py (ValueError)"),
    Break("demo-no-ping", "worker/tools/demo.py", "    if not ping(connection):", "    if False:",
          FAIL + "[demo-redis-down]", "demo at a dead Redis fails inside redis-py"),
    Break("embedded-runtime-error", "worker/tools/embedded.py",
          'raise MissingDependencyError("redis-server is not on PATH:', 'raise RuntimeError("redis-server is not on PATH:',
          FAIL + "[demo-no-redis-server]", "the missing binary as a RuntimeError traceback"),
    Break("export-extra-unchecked", "worker/tools/export.py", "        import ultralytics  # noqa: F401", "        pass",
          FAIL + "[export-without-extra]", "export imports ultralytics unchecked"),
    Break("export-pt-unchecked", "worker/tools/export.py", "    if not pt.is_file():", "    if False:",
          FAIL + "[export-missing-pt]", "a missing .pt found by shutil.copy2"),
    Break("export-int8-data-unchecked", "worker/tools/export.py", "    if args.int8 and not args.data:", "    if False:",
          FAIL + "[export-int8-without-data]", "--int8 without --data found by the data loader"),
    Break("bench-image-unchecked", "worker/tools/bench.py",
          "expand_images(images or [resolve_path(SAMPLES)])", "expand_images(images or [resolve_path(SAMPLES)], missing_ok=True)",
          FAIL + "[bench-missing-image]", "bench reads a missing image (FileNotFoundError)"),
    Break("report-folder-checked-late", "worker/tools/bench.py", "    require_report_folder(args.out)\n", "",
          FAIL + "[bench-report-folder-missing]", "bench finds the missing report folder after measuring"),
    Break("demo-model-ignored", "worker/tools/demo.py", '"model": config.model, ', "",
          T + "test_demo_serves_the_model_it_names", "demo --model prints one model while its workers serve the config's"),
    Break("demo-config-model", "worker/cli.py", "        args.model = DEMO_MODEL\n", "        pass\n",
          T + "test_demo_serves_the_demo_package_by_default", "demo serves the model the config or environment names"),
    Break("demo-json-ignored", "worker/cli.py", "json_lines=args.json)", "json_lines=False)",
          T + "test_demo_json_is_one_result_message_a_line_on_stdout", "demo --json prints the human lines"),
    Break("workers-zero-accepted", "worker/cli.py", "    if value < 1:\n", "    if value < 0:\n",
          FAIL + "[run-zero-workers]", "--workers 0 reaches the pool (ZeroDivisionError)"),
    Break("pool-burst-ignored", "worker/cli.py", '((args.burst, "--burst"),', '((False, "--burst"),',
          FAIL + "[run-pool-burst]", "--burst silently ignored by a pool"),
    Break("pool-worker-index-ignored", "worker/cli.py", '(args.worker_index is not None, "--worker-index")',
          '(False, "--worker-index")', FAIL + "[run-pool-worker-index]", "--worker-index silently ignored by a pool"),
    Break("doctor-image-unchecked", "worker/tools/doctor.py",
          'require_files(images, "doctor image")', "pass", FAIL + "[doctor-missing-image]",
          "a missing doctor image reported as a model failure"),
    Break("config-read-unguarded", "worker/config.py", "except (OSError, UnicodeDecodeError) as exc:",
          "except UnicodeDecodeError as exc:", FAIL + "[config-unreadable]", "a directory as config: IsADirectoryError"),
    Break("zones-read-unguarded", "worker/config.py", "except (OSError, UnicodeDecodeError) as exc:",
          "except UnicodeDecodeError as exc:", FAIL + "[zones-unreadable]", "a directory as zones: IsADirectoryError"),
    Break("save-dir-unchecked", "worker/cli.py", 'make_dir(args.save_dir, "--save-dir folder")', "Path(args.save_dir)",
          FAIL + "[save-dir-not-writable]", "an unwritable --save-dir: cv2.imwrite fails silently, exit 0"),
    Break("log-level-unchecked", "worker/cli.py", 'options.add_argument("--log-level", type=_log_level,',
          'options.add_argument("--log-level", type=str,', FAIL + "[log-level-after-command]",
          "a bogus level reaches logging (ValueError)"),
    Break("burst-waits-forever", "worker/serve/service.py",
          "if burst and time.monotonic() - unreachable_since > config.burst_redis_wait:", "if False:",
          FAIL + "[run-burst-redis-down]", "run --burst retries an unreachable Redis forever"),
    Break("stop-lost-before-rq-loop", "worker/serve/service.py", "stop.forward(rq_worker.stop_at_first_check)",
          "stop.forward(None)", "tests/serve/test_exits.py::test_a_stop_that_lands_just_before_rqs_loop_ends_it_before_any_job",
          "a SIGTERM between ready and RQ's own handlers is lost: the worker serves on"),
    Break("stop-handler-installed-late", "worker/cli.py", "stop = StopRequest().install()", "stop = StopRequest()",
          "tests/serve/test_exits.py::test_a_stop_during_start_up_exits_0_and_takes_no_job",
          "SIGTERM during start-up ends the process by the signal (or, once RQ's loop runs, after it took a job)"),
    Break("worker-channel-poll-60", "worker/jobqueue/rq_compat.py", "run_in_thread(sleep_time=poll,",
          "run_in_thread(sleep_time=60,", "tests/jobqueue/test_rq_compat.py::test_a_stop_is_not_held_by_the_worker_channel_thread",
          "RQ's 60 s worker-channel poll: a stop can hang a minute in RQ's teardown"),
    Break("verbose-no-traceback", "worker/cli.py", "    if verbose:\n        traceback", "    if False:\n        traceback",
          T + "test_verbose_adds_the_traceback_to_the_line", "-v adds nothing"),
    Break("pool-restarts-forever", "worker/serve/pool.py", "if child.restarts >= START_FAILURES_LIMIT:", "if False:",
          T + "test_a_pool_whose_workers_die_at_start_stops", "a pool restarts a dying worker forever"),
    Break("pool-sleeps-in-check", "worker/serve/pool.py",
          "            child.restart_at = now + (min(RESTART_BACKOFF_MAX, 0.5 * 2 ** child.restarts) if child.restarts else 0.0)",
          "            time.sleep(min(RESTART_BACKOFF_MAX, 0.5 * 2 ** child.restarts) if child.restarts else 0.0)\n"
          "            child.restart_at = time.monotonic()",
          "tests/serve/test_pool.py::test_a_crash_looping_worker_backs_off_without_holding_up_the_others",
          "a crash-looping worker's backoff sleeps in the supervision loop, holding up the others and a stop"),
    Break("redis-error-is-a-traceback", "worker/cli.py", "        if not _redis_unreachable(exc):\n            raise",
          "        if True:\n            raise", FAIL + "[promote-redis-down]",
          "a command that meets an unreachable Redis part-way ends in a traceback, not one line"),
    Break("option-without-help", "worker/cli.py", 'help="camera id, e.g. 10cea9e4511f")', ")",
          T + "test_every_option_of_every_command_has_help", "an option without help text"),
    Break("global-options-before-only", "worker/cli.py",
          "description=help_text, parents=[_global_options(top_level=False)])", "description=help_text)",
          T + "test_global_options_before_or_after_the_command", "-v/--log-level only before the command"),
    Break("deprecation-silent", "worker/tools/options.py",
          'warn_deprecated(option_string, "pass images as positional arguments")', "pass",
          T + "test_previous_spellings_still_parse_with_a_warning", "an old spelling accepted without a warning"),
    Break("json-takes-image-name", "worker/tools/options.py",
          "if Path(value).suffix.lower() in IMAGE_SUFFIXES:", "if False:",
          T + "test_json_never_takes_an_image_for_a_report_name", "bench --json a.jpg would overwrite the image"),
    Break("workers-setting-ignored", "worker/cli.py",
          "workers = config.workers if args.workers is None else args.workers", "workers = args.workers or 1",
          T + "test_run_takes_workers_from_the_config_and_the_flag_beats_it", "worker.yaml's workers never read"),
    Break("boxes-drawn-elsewhere", "worker/tools/annotate.py", "cv2.rectangle(out, p1, p2, (0, 200, 255), thickness)",
          "cv2.rectangle(out, (p1[0] + 40, p1[1]), (p2[0] + 40, p2[1]), (0, 200, 255), thickness)",
          T + "test_detect_json_and_annotated_output", "annotated boxes not where the detections are"),
    Break("boxes-not-drawn", "worker/cli.py", "cv2.imwrite(str(target), draw(image, result.detections))",
          "cv2.imwrite(str(target), image)", T + "test_detect_json_and_annotated_output",
          "the 'annotated' image is the snapshot as it came"),
    Break("same-stem-overwritten", "worker/cli.py", "    while target in taken:", "    while False:",
          T + "test_detect_save_dir_keeps_same_stem_images_apart", "a/x.jpg and b/x.png both saved as x.jpg"),
]

if __name__ == "__main__":
    run.BREAKS = CLI_BREAKS
    sys.exit(run.main())
