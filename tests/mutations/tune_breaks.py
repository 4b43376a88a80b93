"""The deliberate breaks the tune tests catch (issue 18: the choice, the fragment, the measuring, the
decode floor and doctor's INT8 advice), run with run.py's machinery:

    .venv/bin/python tests/mutations/tune_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way `deer-worker tune` could give the wrong answer: a lossy model picked by default,
a budget ignored, a fragment the worker refuses, a figure that is not what it says.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

TUNE, T = "worker/tools/tune.py", "tests/tools/test_tune.py::"
BENCH_T, DOCTOR_T = "tests/tools/test_bench.py::", "tests/tools/test_doctor.py::"

TUNE_BREAKS = [
    Break("tune-gate-ignored", TUNE,
          "    return measurement.drop <= max_drop + LOSSLESS_TOLERANCE",
          "    return measurement.drop <= max_drop + 1.0",
          T + "test_lossless_by_default_picks_the_best_throughput_within_the_gate",
          "a model that loses accuracy is eligible without --max-drop"),
    Break("tune-budget-ignored", TUNE,
          "    winners = [r for r in rows if r.eligible and r.meets_budget]",
          "    winners = [r for r in rows if r.eligible]",
          T + "test_impossible_budget_says_none_meets_it_and_names_the_nearest",
          "a pick that misses the budget"),
    Break("tune-accuracy-not-first", TUNE,
          "    pick = max(winners, key=lambda r: (_accuracy_rank(r), r.measurement.images_per_s,",
          "    pick = max(winners, key=lambda r: (r.measurement.images_per_s, _accuracy_rank(r),",
          T + "test_max_drop_allows_a_stated_loss_and_says_what_it_buys",
          "with --max-drop the lossy row wins over a lossless one that also meets the budget"),
    Break("tune-noise-is-not-a-tie", TUNE,
          "    return 0.0 if row.measurement.drop <= LOSSLESS_TOLERANCE else -row.measurement.drop",
          "    return -row.measurement.drop",
          T + "test_lossless_by_default_picks_the_best_throughput_within_the_gate",
          "a drop within the noise outranks throughput (FP32 at 640 picked over a lossless, faster 512)"),
    Break("tune-nearest-includes-lossy", TUNE,
          "        eligible = sorted((r for r in rows if r.eligible), key=lambda r: r.measurement.p95_ms)",
          "        eligible = sorted(rows, key=lambda r: r.measurement.p95_ms)",
          T + "test_impossible_budget_says_none_meets_it_and_names_the_nearest",
          "a model outside the gate offered as a lossless near miss"),
    Break("tune-lossy-meeting-budget-unnamed", TUNE,
          "                           for r in lossy[:1]]", "                           for r in lossy[:0]]",
          T + "test_a_lossy_row_that_meets_the_budget_is_named_with_its_drop",
          "the report hides that a stated loss would meet the budget"),
    Break("tune-loss-buys-wrong-base", TUNE,
          "        best = min(lossless, key=lambda r: r.measurement.p95_ms, default=None)",
          "        best = max(lossless, key=lambda r: r.measurement.p95_ms, default=None)",
          T + "test_max_drop_allows_a_stated_loss_and_says_what_it_buys",
          "what the loss buys measured against the slowest lossless row"),
    Break("tune-headroom-inverted", TUNE,
          '            "sustained_images_per_s": images_per_s, "ratio": images_per_s / asked,',
          '            "sustained_images_per_s": images_per_s, "ratio": asked / images_per_s,',
          T + "test_headroom_is_the_load_sustained_against_the_load_asked",
          "headroom as load over capacity"),
    Break("tune-fragment-unknown-key", TUNE,
          '             f"workers: {c.workers}", f"batch:',
          '             f"worker_count: {c.workers}", f"batch:',
          T + "test_config_fragment_is_accepted_by_the_worker",
          "a fragment the worker refuses (unknown setting)"),
    Break("tune-fragment-batch4-as-1", TUNE,
          "f\"batch: '{c.batch if c.batch == 1 else 'auto'}'\"", "f\"batch: '1'\"",
          T + "test_config_fragment_is_accepted_by_the_worker",
          "a batch-4 pick written as batch 1"),
    Break("tune-fragment-no-shapes", TUNE,
          "    if c.shape == \"rect\" and shapes:", "    if False:",
          T + "test_rect_fragment_warms_the_snapshots_aspect_ratios",
          "a rect pick without the snapshots' shapes warmed"),
    Break("tune-splits-oversubscribe", TUNE,
          "            for threads in range(1, cores // workers + 1)]",
          "            for threads in range(1, cores + 1)]",
          T + "test_candidates_split_the_cores_between_workers",
          "workers x threads over the cores"),
    Break("tune-agreement-counts-misses", TUNE,
          "    return 1.0 if matched + unmatched == 0 else 2 * matched / (2 * matched + unmatched)",
          "    return 1.0 if matched + unmatched == 0 else matched / max(matched, 1)",
          T + "test_agreement_counts_matched_boxes_of_the_reference",
          "boxes one model misses do not lower the agreement"),
    Break("tune-pick-not-through-queue", TUNE,
          "    for _ in range(0 if args.no_queue else QUEUE_ROUNDS):",
          "    for _ in range(0):",
          T + "test_real_run_on_the_demo_irs_picks_a_config_the_worker_loads",
          "the pick's figures never measured through a real queue"),
    Break("tune-reduced-decode-always", TUNE,
          "        decodes = (False, True) if reducible else (False,)",
          "        decodes = (False, True)",
          T + "test_real_run_on_the_demo_irs_picks_a_config_the_worker_loads",
          "reduced decode measured where it cannot change anything (time spent on a copy)"),
    Break("bench-decode-floor-reduced", "worker/tools/bench.py",
          "            decode(data)\n            times.append", "            decode(data, reduction=8)\n            times.append",
          BENCH_T + "test_decode_floor_is_a_full_decode_of_each_snapshot",
          "the floor is a reduced decode, not a full one"),
    Break("doctor-int8-advice-generic", "worker/tools/doctor.py",
          '        return Finding(OK, "cpu", detail, INT8_WITHOUT_VNNI)',
          '        return Finding(OK, "cpu", detail, "no VNNI: INT8 gains less over f32 here")',
          DOCTOR_T + "test_haswell_like_cpu_has_no_vnni",
          "doctor without the expected INT8 gain or the pointer to tune"),
    Break("doctor-int8-advice-on-vnni", "worker/tools/doctor.py",
          "    if not vnni:\n        return Finding(OK, \"cpu\", detail, INT8_WITHOUT_VNNI)",
          "    if True:\n        return Finding(OK, \"cpu\", detail, INT8_WITHOUT_VNNI)",
          DOCTOR_T + "test_vnni_cpu_gets_no_int8_warning",
          "the no-VNNI advice given on a VNNI host"),
]

if __name__ == "__main__":
    run.BREAKS = TUNE_BREAKS
    sys.exit(run.main())
