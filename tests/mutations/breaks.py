"""The deliberate breaks tests/mutations/run.py applies, one or more per test that was made able to fail
(issue 12). Each: the file, its exact old text (must occur once), the replacement, the pytest node id
that must FAIL with the break applied, and what the break stands for.

Prefer breaks in code nobody is rewriting (imagecodec, preprocess, postprocess, evaluation, metrics,
health, cameras, config): a break whose old text is gone reports NOT APPLIED and needs updating.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Break:
    name: str
    file: str
    old: str
    new: str
    test: str
    why: str


BREAKS = [
    # --- tools ------------------------------------------------------------------------------------------
    Break("doctor-status-spelling", "worker/tools/doctor.py",
          'OK, WARN, FAIL = "OK", "WARN", "FAIL"', 'OK, WARN, FAIL = "ok", "WARN", "FAIL"',
          "tests/tools/test_doctor.py::test_healthy_host_passes",
          "doctor --json reports a status spelling scripts do not expect"),
    Break("bench-plot-drops-a-series", "worker/tools/bench.py",
          'ax1.bar(x + 0.2, [r.service["p50_ms"] if r.service else 0 for r in results], 0.4, label="service p50")',
          'ax1.bar(x + 0.2, [0 for r in results], 0.4, label="service p50")',
          "tests/tools/test_bench.py::test_plot_draws_both_series_in_both_panels",
          "the bench plot draws the legend of a series but not its bars"),
    Break("bench-gain-wrong-figure", "worker/tools/bench.py",
          '"gain": b4.latency["images_per_s"] / b1.latency["images_per_s"]})',
          '"gain": b4.throughput["images_per_s"] / b1.latency["images_per_s"]})',
          "tests/tools/test_bench.py::test_bench_demo_model_json",
          "the batch gain divides two different kinds of figure (a positive number all the same)"),
    # --- inference ---------------------------------------------------------------------------------------
    Break("imagecodec-refuses-complete-jpegs", "worker/inference/imagecodec.py",
          'if data.rfind(b"\\xff\\xd9", pos + 2 + length) == -1:',
          'if data.rfind(b"\\xff\\xd9", pos + 2 + length) != -1:',
          "tests/inference/test_imagecodec.py::test_garbage_scan_data_decodes_to_a_flat_frame_of_the_declared_size",
          "the end-of-image check inverted: every complete JPEG is refused as truncated"),
    Break("clahe-ignored", "worker/inference/preprocess.py",
          "    if preprocessing.clahe:\n", "    if False:\n",
          "tests/inference/test_detector.py::test_batch_results_equal_single_results[True]",
          "a camera's clahe setting never reaches the image (batch and single then agree trivially)"),
]
BREAKS += [
    Break("roi-overflow-unchecked", "worker/inference/preprocess.py",
          "        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):  # finite parts can still add up to inf",
          "        if False:",
          "tests/inference/test_preprocess.py::test_a_roi_whose_corner_overflows_to_infinity_is_a_roi_error",
          "a ROI whose corner sums to inf crashes the batch with OverflowError instead of failing as roi_outside_image"),
]
BREAKS += [
    # The INT8 model is the artifact under test here: its shipped IR made to disagree with the FP32 one
    # (run at another input size than it was exported and calibrated for).
    Break("int8-model-off", "models/demo/deer-yolo26n_int8_openvino_model/metadata.yaml",
          "imgsz:\n- 320\n- 320\n", "imgsz:\n- 224\n- 224\n",
          "tests/inference/test_detector.py::test_int8_agrees_with_fp32_box_for_box",
          "the shipped INT8 IR no longer agrees with FP32 box for box"),
    Break("int8-model-off-validate", "models/demo/deer-yolo26n_int8_openvino_model/metadata.yaml",
          "imgsz:\n- 320\n- 320\n", "imgsz:\n- 224\n- 224\n",
          "tests/tools/test_validate.py::test_demo_models_through_the_served_path",
          "an INT8 regression on the held-out split fails validate's demo test"),
]
BREAKS += [
    # --- shipped files: properties, not copies -------------------------------------------------------------
    Break("config-int-accepts-fractions", "worker/config.py",
          "if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):",
          "if isinstance(value, bool):",
          "tests/test_config.py::test_every_typed_setting_refuses_a_wrong_type_by_name",
          "an integer setting silently truncates 2.5 to 2"),
    Break("config-env-override-lost", "worker/config.py",
          "        if env_key in env:\n", "        if env_key in env and not isinstance(default, float):\n",
          "tests/test_config.py::test_every_setting_has_an_environment_override",
          "the DEER_WORKER_ variables of the float settings (max_age, iou) are ignored"),
    Break("zones-roi-normalized-dropped", "worker/cameras.py",
          "return Roi(normalized=normalized, **values)", "return Roi(normalized=False, **values)",
          "tests/test_cameras.py::test_shipped_zones_file_documents_every_setting_and_parses_as_written",
          "a shipped camera's fractional ROI is read as pixels"),
    Break("unit-loses-its-sandbox", "deploy/systemd/deer-worker@.service",
          "ProtectSystem=strict\n", "",
          "tests/test_deploy.py::test_unit_sandboxing_keeps_the_exposure_score",
          "the systemd unit stops making the file system read-only"),
    Break("unit-runs-as-root", "deploy/systemd/deer-worker@.service",
          "User=deer-worker\n", "User=root\n",
          "tests/test_deploy.py::test_unit_properties",
          "the worker runs as root"),
    Break("metric-renamed", "worker/serve/metrics.py",
          '"queue_depth", "Jobs waiting in the queue', '"queue_length", "Jobs waiting in the queue',
          "tests/test_deploy.py::test_dashboard_metrics_are_all_scraped",
          "an exported metric is renamed under the dashboard that queries it"),
]
BREAKS += [
    # --- export (reference: needs the export extra; each run exports the demo checkpoint, ~1-2 min) ---------
    Break("export-calibrates-on-0-255", "worker/tools/export.py",
          "np.float32) / 255.0)", "np.float32) * 1.0)",
          "tests/tools/test_export.py::test_int8_drop_within_the_gate_and_int8_serves",
          "INT8 calibrated on other ranges than the IR receives: the exported INT8 no longer finds the deer"),
    Break("bench-pairs-nothing", "worker/tools/bench.py",
          "_base_name(int8.name), int8.config.precision", "int8.name, int8.config.precision",
          "tests/tools/test_export.py::test_bench_runs_on_both",
          "bench runs both IRs but no longer pairs FP32 with its INT8 (no speedup reported)"),
]
BREAKS += [
    Break("worker-never-sets-its-model", "worker/serve/service.py",
          "    metrics.set_model(model=detector.spec.name, version=",
          "    (lambda **kw: None)(model=detector.spec.name, version=",
          "tests/test_deploy.py::test_dashboard_metrics_are_all_scraped",
          "the worker process no longer fills a family the dashboard shows (deer_worker_model_loaded): only a "
          "real worker's scrape shows it missing"),
]
BREAKS += [
    Break("parity-ignores-confidence", "worker/tools/reference.py",
          "abs(dscores[same][best] - score) <= 0.01", "abs(dscores[same][best] - score) <= 1.0",
          "tests/tools/test_reference.py::test_each_tolerance_is_a_mismatch_past_it",
          "parity counts a box whose score moved as matched: a reduced decode or an export would pass parity"),
    Break("host-line-drops-vnni", "worker/evaluation/host.py",
          'HOST_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")',
          'HOST_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx_vnni", "avx512_bf16", "amx_tile")',
          "tests/evaluation/test_host.py::test_host_line_names_the_cpu_and_its_isa_flags",
          "the host line beside every figure no longer says whether the CPU has AVX-512 VNNI (INT8 ~2x apart)"),
]
BREAKS += [
    Break("isa-cap-read-after-start", "worker/evaluation/isa.py",
          'raw = Path("/proc/self/environ").read_bytes()', 'raw = Path("/proc/self/environ-gone").read_bytes()',
          "tests/evaluation/test_isa.py::test_a_cap_set_after_the_process_started_does_not_count",
          "a cap set in os.environ after start (oneDNN may have dispatched: it caps nothing) counts as the "
          "process running capped: the command measures uncapped and its host line says `isa cap`"),
    Break("isa-child-not-capped", "worker/evaluation/isa.py",
          "        env[ONEDNN_ENV] = CAPS[check_name(isa)]\n", "        check_name(isa)\n",
          "tests/evaluation/test_isa.py::test_probe_sees_the_cap_take_and_capped_fp32_equal_uncapped",
          "the capped child is started without ONEDNN_MAX_CPU_ISA: its figures are native ones called a proxy"),
]
