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
          "    if clahe:\n", "    if False:\n",
          "tests/inference/test_detector.py::test_batch_results_equal_single_results[True]",
          "a camera's clahe setting never reaches the image (batch and single then agree trivially)"),
]
