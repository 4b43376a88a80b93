"""The deliberate breaks the model lifecycle tests catch (issue 17: compare's agreement measure and
gallery, the desired-model state and reload), run with run.py's machinery:

    .venv/bin/python tests/mutations/lifecycle_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way the lifecycle could regress: two models reported as agreeing when they do not,
a gallery that hides a disagreement, a worker that switches to a model that failed to load, or goes
back to the old one on a restart.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

COMPARE = "tests/tools/test_compare.py::"
RELOAD = "tests/serve/test_reload.py::"

LIFECYCLE_BREAKS = [
    # --- compare ---------------------------------------------------------------------------------------
    Break("compare-ignores-class", "worker/tools/compare.py",
          "iou = np.where(a.class_id[:, None] == b.class_id[None, :], iou, 0.0)", "pass",
          COMPARE + "test_matching_pairs_same_class_boxes_at_iou_half",
          "a deer box and a person box in the same place count as the same object"),
    Break("compare-loose-match", "worker/tools/compare.py",
          "        if iou[i, j] < match_iou:", "        if iou[i, j] < 0.0:",
          COMPARE + "test_matching_pairs_same_class_boxes_at_iou_half",
          "boxes that barely overlap are paired"),
    Break("compare-deer-table", "worker/tools/compare.py",
          '"a_only" if deer_a else "b_only" if deer_b', '"b_only" if deer_a else "a_only" if deer_b',
          COMPARE + "test_deer_decision_table_and_summary",
          "which model saw the deer is swapped"),
    Break("compare-agrees-ignores-boxes", "worker/tools/compare.py",
          'return self.deer in ("both", "neither") and not self.a_unmatched and not self.b_unmatched',
          'return self.deer in ("both", "neither")',
          COMPARE + "test_matching_pairs_same_class_boxes_at_iou_half",
          "a box only one model found is not a disagreement (the gallery hides it)"),
    Break("compare-gallery-one-side", "worker/tools/compare.py",
          "            panel = draw(image, detections)", "            panel = image.copy()",
          COMPARE + "test_fp32_vs_int8_on_the_samples_writes_json_and_a_side_by_side_gallery",
          "the gallery shows the snapshot without either model's boxes"),
    Break("compare-gallery-unsorted", "worker/tools/compare.py",
          "key=lambda r: -r.agreement.severity)", "key=lambda r: r.agreement.severity)",
          COMPARE + "test_fp32_vs_int8_on_the_samples_writes_json_and_a_side_by_side_gallery",
          "the least interesting disagreement comes first"),
    Break("compare-self-nonzero-delta", "worker/tools/compare.py",
          "[round(float(b.confidence[j] - a.confidence[i]), 4) for i, j, _ in pairs]",
          "[round(float(b.confidence[j] - a.confidence[i] + 0.01), 4) for i, j, _ in pairs]",
          COMPARE + "test_a_model_compared_with_itself_agrees_completely",
          "identical answers report a confidence difference"),
    # --- reload (each starts two worker processes: about a minute apiece) ------------------------------
    Break("reload-restart-forgets-desired", "worker/serve/model_state.py",
          "            desired = read_desired(self.connection_factory())\n        except",
          "            desired = None\n        except",
          RELOAD + "test_reload_under_load_switches_each_worker_once_and_never_back_also_after_a_kill",
          "a worker restarted after a reload goes back to the config's model"),
    Break("reload-old-model-jobs-refused", "worker/serve/model_state.py",
          "        self.served_names = tuple(dict.fromkeys(names))",
          "        self.served_names = names[:1]",
          RELOAD + "test_reload_under_load_switches_each_worker_once_and_never_back_also_after_a_kill",
          "jobs naming the old model fail model_unavailable during the switch"),
    Break("reload-metrics-keep-old-model", "worker/serve/model_state.py",
          "        self.on_switch(detector)", "        self.on_switch(previous or detector)",
          RELOAD + "test_reload_under_load_switches_each_worker_once_and_never_back_also_after_a_kill",
          "deer_worker_model_loaded still names the old model after a switch"),
    Break("reload-failure-reported-as-switch", "worker/serve/model_state.py",
          "            self._answer(desired, FAILED, reason=f\"{type(exc).__name__}: {exc}\")\n            return",
          "            self._answer(desired, SWITCHED)\n            return",
          RELOAD + "test_a_broken_model_is_not_switched_to_and_reload_fails_loudly",
          "a model that failed to load is reported switched: reload exits 0"),
]

if __name__ == "__main__":
    run.BREAKS = LIFECYCLE_BREAKS
    sys.exit(run.main())
