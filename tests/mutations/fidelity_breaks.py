"""The deliberate breaks the issue-13 tools tests catch (export's serve choice, the accuracy gate vs the .pt,
the model's preprocessing, rect calibration; validate's .pt reference and gate), run with run.py's machinery:

    .venv/bin/python tests/mutations/fidelity_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way the export or the gate could regress silently: an IR that lost accuracy served, a
CLAHE clip assumed, a mAP50-95 drop let through, a .pt row scored a different way from the IRs.
Kept apart from breaks.py so the list can be run on its own. Files: worker/tools/export.py, validate.py, reference.py, bench.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

EXPORT, VALIDATE = "tests/tools/test_export.py::", "tests/tools/test_validate.py::"

FIDELITY_BREAKS = [
    # --- export: the serve choice and the gate --------------------------------------------------------
    Break("serve-ignores-the-gate", "worker/tools/export.py",
          'passing = [n for n, e in irs.items() if e["within_gate"]]', "passing = list(irs)",
          EXPORT + "test_serve_is_the_fastest_ir_within_the_gate",
          "the fastest IR serves even when it lost accuracy against the .pt"),
    Break("serve-the-slowest", "worker/tools/export.py",
          'name = min(passing, key=lambda n: irs[n]["latency_ms"]["f32_p50"])',
          'name = max(passing, key=lambda n: irs[n]["latency_ms"]["f32_p50"])',
          EXPORT + "test_serve_is_the_fastest_ir_within_the_gate",
          "of the IRs that keep the accuracy, a slower one serves"),
    Break("no-gate-serves-first", "worker/tools/export.py",
          'name = max(irs, key=lambda n: (irs[n]["accuracy"]["mAP50-95"], irs[n]["accuracy"]["mAP50"]))',
          "name = next(iter(irs))",
          EXPORT + "test_with_no_ir_in_the_gate_the_most_accurate_serves_and_it_says_so",
          "with no IR in the gate, whichever came first serves"),
    Break("no-data-serves-end2end", "worker/tools/export.py",
          'raw = [n for n, e in irs.items() if e["head"] == "raw" and e["weights"] == "fp32"]',
          'raw = [n for n, e in irs.items() if e["head"] == "end2end" and e["weights"] == "fp32"]',
          EXPORT + "test_without_data_the_raw_fp32_head_serves",
          "unmeasured, the one-to-one head serves (it lost 1.8 points on the user's model)"),
    Break("gate-map50-95-ignored", "worker/tools/export.py",
          'within_gate({k: -v for k, v in delta.items()}, gate_limits(max_drop_map50, max_drop_map))',
          'within_gate({k: -v for k, v in delta.items()}, gate_limits(max_drop_map50, 1.0))',
          EXPORT + "test_gate_verdict_limits_both_metrics",
          "export's gate lets a mAP50-95 drop through"),
    # --- export: the model's preprocessing ------------------------------------------------------------
    Break("clahe-clip-assumed", "worker/tools/export.py",
          "    if args.clahe and args.clahe_clip is None:\n",
          "    if args.clahe and args.clahe_clip is None:\n        args.clahe_clip = 2.0  # assumed\n"
          "    if args.clahe and args.clahe_clip is None:\n",
          EXPORT + "test_bad_export_options_are_refused_before_exporting",
          "--clahe without --clahe-clip quietly assumes the detector's 2.0 (the user trained on 3.0)"),
    Break("preprocessed-key-ignored", "worker/tools/export.py",
          "return bool(isinstance(raw, dict) and raw.get(PREPROCESSED_KEY))", "return False",
          EXPORT + "test_data_preprocessed_by_flag_or_yaml_key",
          "a CLAHE-processed dataset marked in its yaml gets CLAHE a second time"),
    Break("calibration-square-only", "worker/tools/export.py",
          "        if square or i % 3 == 2:\n", "        if True:\n",
          EXPORT + "test_calibration_mixes_the_worker_rect_shapes_and_applies_clahe_only_when_asked",
          "INT8 calibrated on square inputs only, while the worker serves rect ones"),
    Break("calibration-clahe-dropped", "worker/tools/export.py",
          "    preprocessing = Preprocessing(clahe=True, clahe_clip=clahe[0], clahe_tiles=tuple(clahe[1])) if clahe else Preprocessing()",
          "    preprocessing = Preprocessing()",
          EXPORT + "test_calibration_mixes_the_worker_rect_shapes_and_applies_clahe_only_when_asked",
          "a CLAHE-trained model calibrated on raw images"),
    Break("calibration-clahe-own-copy", "worker/tools/export.py",
          "    preprocessing = Preprocessing(clahe=True, clahe_clip=clahe[0], clahe_tiles=tuple(clahe[1])) if clahe else Preprocessing()",
          "    preprocessing = Preprocessing(clahe=True, clahe_clip=2.0, clahe_tiles=tuple(clahe[1])) if clahe else Preprocessing()",
          EXPORT + "test_calibration_inputs_are_the_worker_inputs_pixel_for_pixel",
          "calibration's CLAHE is not the model's (here: the detector's usual clip 2.0, not the card's 3.0)"),
    Break("calibration-own-letterbox", "worker/tools/export.py",
          "            buffer, _ = prepare_rect(decoded, imgsz, preprocessing=preprocessing)\n",
          "            from worker.inference.preprocess import _crop, letterbox_into\n"
          "            image = _crop(decoded, None, preprocessing)[0]\n"
          "            buffer = np.full((*input_shape(*image.shape[:2], imgsz), 3), 114, np.uint8)\n"
          "            letterbox_into(image, buffer)\n",
          EXPORT + "test_calibration_inputs_are_the_worker_inputs_pixel_for_pixel",
          "calibration's own letterbox without imgsz (the code this replaced): a pixel off ultralytics at odd sizes"),
    # --- validate: the gate and the .pt reference -----------------------------------------------------
    Break("validate-gate-map50-only", "worker/tools/validate.py",
          'failed = [r for r in results[1:] if not within_gate(r.drop(reference), limits)]',
          'failed = [r for r in results[1:] if r.drop(reference)["mAP50"] > limits["mAP50"] + 1e-9]',
          VALIDATE + "test_gate_on_map50_and_map50_95_drop",
          "validate's gate lets a mAP50-95 drop through"),
    Break("validate-map-limit-ignored", "worker/tools/validate.py",
          'limits = gate_limits(args.max_drop_map50, args.max_drop_map)',
          'limits = gate_limits(args.max_drop_map50, DEFAULT_MAX_DROP_MAP)',
          VALIDATE + "test_gate_limits_are_options",
          "--max-drop-map is accepted and ignored"),
    Break("validate-pt-gated-on-served-scores", "worker/evaluation/gate.py",
          "        if self.ultralytics is not None:\n            return {k: self.ultralytics[k] for k in GATE_METRICS}\n",
          "        if self.metrics is None:\n            return {k: self.ultralytics[k] for k in GATE_METRICS}\n",
          VALIDATE + "test_a_pt_is_the_reference_and_irs_gate_on_ultralytics_scores",
          "IRs' served-path scores compared with the .pt's ultralytics-val scores (two ways of scoring)"),
    Break("validate-first-model-reference-despite-pt", "worker/tools/validate.py",
          "    if checkpoints:\n        pt = Path(checkpoints[0])",
          "    if checkpoints and False:\n        pt = Path(checkpoints[0])",
          VALIDATE + "test_a_pt_is_the_reference_and_irs_gate_on_ultralytics_scores",
          "the .pt given is not the reference"),
    # --- bench: the shape a dynamic IR is measured at -------------------------------------------------
    Break("bench-dynamic-at-square", "worker/tools/bench.py",
          "return input_shape(1080, 1920, max(spec.imgsz)) if spec.dynamic else tuple(spec.imgsz)",
          "return tuple(spec.imgsz)",
          "tests/tools/test_bench.py::test_a_dynamic_ir_is_benched_at_the_rect_shape_the_worker_serves",
          "bench measures a dynamic IR at the square input the worker no longer serves"),
]

if __name__ == "__main__":
    run.BREAKS = FIDELITY_BREAKS
    sys.exit(run.main())
