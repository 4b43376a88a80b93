"""The deliberate breaks the model lifecycle tests catch (issue 17: compare's agreement measure and
gallery, the desired-model state and reload), run with run.py's machinery:

    .venv/bin/python tests/mutations/lifecycle_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way the lifecycle could regress: two models reported as agreeing when they do not,
a gallery that hides a disagreement, a .pt run otherwise than it was trained, a worker that switches to
a model that failed to load, or goes back to the old one on a restart, a start that redoes what a
filled cache could have saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

COMPARE = "tests/tools/test_compare.py::"
AGREEMENT, AGREEMENT_T = "worker/evaluation/agreement.py", "tests/evaluation/test_agreement.py::"
STATE = "tests/serve/test_model_state.py::"
PROMOTE = "tests/tools/test_promote.py::"
SHADOW = "tests/serve/test_shadow.py::"
TIMING = "tests/inference/test_batch_timing.py::"
SERVICE = "tests/serve/test_service.py::"
GATEWAY = "tests/serve/test_gateway.py::"

LIFECYCLE_BREAKS = [
    # --- compare ---------------------------------------------------------------------------------------
    Break("compare-ignores-class", AGREEMENT,
          "iou = np.where(a.class_id[:, None] == b.class_id[None, :], iou, 0.0)", "pass",
          AGREEMENT_T + "test_matching_pairs_same_class_boxes_at_iou_half",
          "a deer box and a person box in the same place count as the same object"),
    Break("compare-loose-match", AGREEMENT,
          "        if iou[i, j] < match_iou:", "        if iou[i, j] < 0.0:",
          AGREEMENT_T + "test_matching_pairs_same_class_boxes_at_iou_half",
          "boxes that barely overlap are paired"),
    Break("compare-deer-table", AGREEMENT,
          '"a_only" if deer_a else "b_only" if deer_b', '"b_only" if deer_a else "a_only" if deer_b',
          AGREEMENT_T + "test_deer_decision_table_and_summary",
          "which model saw the deer is swapped"),
    Break("compare-agrees-ignores-boxes", AGREEMENT,
          'return self.deer in ("both", "neither") and not self.a_unmatched and not self.b_unmatched',
          'return self.deer in ("both", "neither")',
          AGREEMENT_T + "test_matching_pairs_same_class_boxes_at_iou_half",
          "a box only one model found is not a disagreement (the gallery hides it)"),
    Break("compare-gallery-one-side", "worker/tools/compare.py",
          "            panel = draw(image, detections)", "            panel = image.copy()",
          COMPARE + "test_fp32_vs_int8_on_the_samples_writes_json_and_a_side_by_side_gallery",
          "the gallery shows the snapshot without either model's boxes"),
    Break("compare-gallery-unsorted", "worker/tools/compare.py",
          "key=lambda r: -r.agreement.severity)", "key=lambda r: r.agreement.severity)",
          COMPARE + "test_fp32_vs_int8_on_the_samples_writes_json_and_a_side_by_side_gallery",
          "the least interesting disagreement comes first"),
    Break("compare-self-nonzero-delta", AGREEMENT,
          "[round(float(b.confidence[j] - a.confidence[i]), 4) for i, j, _ in pairs]",
          "[round(float(b.confidence[j] - a.confidence[i] + 0.01), 4) for i, j, _ in pairs]",
          COMPARE + "test_a_model_compared_with_itself_agrees_completely",
          "identical answers report a confidence difference"),
    Break("compare-pt-ignores-its-card", "worker/tools/compare.py",
          '            if ModelCard.read(pt.parent).checkpoint != pt.name:',
          '            if True:',
          COMPARE + "test_a_checkpoint_against_its_served_ir_agrees_within_the_parity_tolerance",
          "a .pt runs without what its model card records (threshold, NMS IoU, CLAHE, version)"),
    Break("compare-pt-wrong-imgsz", "worker/tools/compare.py",
          "        self.imgsz, self.max_pixels = checkpoint_imgsz(pt), config.max_pixels",
          "        self.imgsz, self.max_pixels = 640, config.max_pixels",
          COMPARE + "test_a_checkpoint_against_its_served_ir_agrees_within_the_parity_tolerance",
          "a .pt predicts at another input size than it was trained at"),
    Break("compare-pt-roi-offset-lost", "worker/tools/compare.py",
          "(xyxy + np.array([x0, y0, x0, y0]))", "(xyxy + 0)",
          COMPARE + "test_a_checkpoint_against_its_served_ir_agrees_within_the_parity_tolerance",
          "a .pt's boxes stay in ROI-crop pixels, not the snapshot's"),
    # --- cold start: warm-up times remembered beside the compiled-model cache ----------------------------
    Break("cold-start-times-never-remembered", "worker/inference/batch_timing.py",
          "    if not cache_dir:\n        return None\n    path =", "    if True:\n        return None\n    path =",
          TIMING + "test_a_second_start_reuses_the_measured_times_and_runs_each_model_once",
          "every start measures batch 1 and 4 again (11 inferences per shape before ready)"),
    Break("cold-start-remembered-auto-compiles-batch4", "worker/inference/detector.py",
          '            keep_four = self._drain and (batch != "auto" or _batch4_pays(t1, t4))',
          "            keep_four = self._drain",
          TIMING + "test_auto_decides_on_the_remembered_times_and_skips_a_batch4_it_turns_down[4.0]",
          "a cached start compiles and runs a batch-4 model that auto then throws away"),
    Break("cold-start-key-ignores-shape", "worker/inference/batch_timing.py",
          '"shape": list(shape), ', "",
          TIMING + "test_the_key_follows_what_the_times_depend_on",
          "one shape's batch times decide another's padding"),
    Break("cold-start-phases-not-logged", "worker/serve/service.py",
          "                    _log_start(name, before_model, model_seconds, detector)\n", "",
          SERVICE + "test_the_start_up_line_says_where_the_time_went_and_a_cached_start_skips_compile_and_timing",
          "nobody can tell where a slow start went"),
    # --- reload: the switcher against the real Redis (test_reload.py, two real workers, is -m slow) ------
    Break("reload-restart-forgets-desired", "worker/serve/model_state.py",
          "            desired = read_desired(self.connection_factory())\n        except",
          "            desired = None\n        except",
          STATE + "test_start_serves_the_stored_model_and_falls_back_to_the_config_if_it_does_not_load",
          "a worker restarted after a reload goes back to the config's model"),
    Break("reload-swaps-inside-a-batch", "worker/serve/model_state.py",
          "            if not self._busy:  # idle", "            if True:  # idle",
          STATE + "test_a_switch_waits_for_the_batches_in_hand_and_old_model_jobs_stay_served",
          "the detector changes while a batch prepared by the old one is in hand"),
    Break("reload-old-model-jobs-refused", "worker/serve/model_state.py",
          "        self.served_names = tuple(dict.fromkeys(names))",
          "        self.served_names = names[:1]",
          STATE + "test_a_switch_waits_for_the_batches_in_hand_and_old_model_jobs_stay_served",
          "jobs naming the old model fail model_unavailable during the switch"),
    Break("reload-metrics-keep-old-model", "worker/serve/model_state.py",
          "        self.on_switch(detector)", "        self.on_switch(previous or detector)",
          STATE + "test_a_switch_waits_for_the_batches_in_hand_and_old_model_jobs_stay_served",
          "deer_worker_model_loaded still names the old model after a switch"),
    Break("reload-failure-reported-as-switch", "worker/serve/model_state.py",
          "            self._answer(desired, FAILED, reason=f\"{type(exc).__name__}: {exc}\")\n            return",
          "            self._answer(desired, SWITCHED)\n            return",
          STATE + "test_a_model_that_fails_to_load_is_not_switched_to",
          "a model that failed to load is reported switched: reload exits 0"),
    Break("reload-switches-to-broken", "worker/serve/model_state.py",
          "        except Exception as exc:  # noqa: BLE001 - a model that fails to load or warm is not switched to\n",
          "        except ZeroDivisionError as exc:\n",
          STATE + "test_a_model_that_fails_to_load_is_not_switched_to",
          "a load failure escapes the watch thread: no answer, reload waits out its timeout"),
    # --- the gateway's /health: the model state in Redis -------------------------------------------------
    Break("gateway-health-ignores-model-state", "worker/serve/gateway.py",
          '        version = stored["version"] if stored and stored["version"] else self.model_version',
          "        version = self.model_version",
          GATEWAY + "test_health_reports_the_model_state_stored_in_redis",
          "after a promote /health names the config's model until a result of the new one passes"),
    Break("gateway-health-names-a-failed-model", "worker/serve/gateway.py",
          "self._version_of(desired.previous) if failed", "self._version_of(desired.model) if failed",
          GATEWAY + "test_health_reports_the_model_state_stored_in_redis",
          "a reload every worker refused is reported as serving"),
    # --- promote: export, the no-loss gate vs production, reload, rollback ------------------------------
    Break("promote-gate-ignores-drop", "worker/tools/promote.py",
          "    passed = accuracy_gate.within_gate(drop, accuracy_gate.gate_limits(args.max_drop_map50, args.max_drop_map))",
          "    passed = True",
          PROMOTE + "test_a_worse_model_fails_the_gate_exit_3_and_nothing_is_reloaded",
          "a model that loses accuracy against production is promoted"),
    Break("promote-gates-against-itself", "worker/tools/promote.py",
          "               for m in (production, candidate)]", "               for m in (candidate, candidate)]",
          PROMOTE + "test_a_worse_model_fails_the_gate_exit_3_and_nothing_is_reloaded",
          "the gate never looks at the model in production"),
    Break("promote-forgets-previous", "worker/tools/promote.py",
          "timeout=args.timeout, previous=production)", "timeout=args.timeout, previous=None)",
          PROMOTE + "test_the_demo_checkpoint_is_promoted_with_its_version_and_rollback_returns",
          "rollback after a first promote has nothing to return to"),
    Break("promote-drops-version", "worker/tools/promote.py",
          '    argv += ["--version", args.model_version] if args.model_version else []', "    argv += []",
          PROMOTE + "test_the_demo_checkpoint_is_promoted_with_its_version_and_rollback_returns",
          "results report the checkpoint's stem, not the version the user gave"),
    # --- shadow: after the results, never while a job waits, capped, never raising -----------------------
    Break("shadow-runs-while-jobs-wait", "worker/serve/shadow.py",
          "                if job_waiting():\n                    return ran", "                if False:\n                    return ran",
          SHADOW + "test_the_shadow_never_runs_while_a_job_waits_and_drops_the_oldest_beyond_its_cap",
          "the shadow holds a waiting job back for the whole held backlog"),
    Break("shadow-unbounded-hold", "worker/serve/shadow.py",
          "            if len(self.pending) >= self.capacity:", "            if False:",
          SHADOW + "test_a_worker_with_a_shadow_serves_identically_and_its_metrics_move_in_a_live_scrape",
          "a busy worker holds every snapshot for the shadow (memory grows, backlog never counted)"),
    Break("shadow-error-raised", "worker/serve/shadow.py",
          "        except Exception as exc:  # noqa: BLE001 - a bad snapshot, a lost Redis, a runtime error: counted",
          "        except ZeroDivisionError as exc:",
          SHADOW + "test_an_exception_in_the_shadow_is_counted_never_raised",
          "a shadow failure escapes into the consumer"),
    Break("shadow-outcome-swapped", "worker/serve/shadow.py",
          '"a_only": "primary_only", "b_only": "shadow_only"', '"a_only": "shadow_only", "b_only": "primary_only"',
          SHADOW + "test_a_disagreement_is_streamed_with_both_answers",
          "which model saw the deer is reported the wrong way round"),
    Break("shadow-no-rest", "worker/serve/shadow.py",
          "            if time.monotonic() < self.next_run:", "            if False:",
          SHADOW + "test_the_shadow_takes_at_most_its_share_of_wall_time",
          "the shadow fills every idle moment of a loaded worker: queueing (p99) grows"),
    Break("shadow-before-publish", "worker/jobqueue/consumer.py",
          "            self.publish(taken)\n            for item in taken:\n",
          "            if self.shadow is not None:\n                self.offer_shadow(to_infer)\n"
          "                self.shadow.run_pending(lambda: False)\n            self.publish(taken)\n            for item in taken:\n",
          SHADOW + "test_a_worker_with_a_shadow_serves_identically_and_its_metrics_move_in_a_live_scrape",
          "the shadow runs before the batch's results are published: every result waits for it"),
    Break("shadow-agreement-not-counted", "worker/serve/metrics.py",
          "        self.shadow_agreement.labels(camera, outcome).inc()", "        pass",
          SHADOW + "test_a_worker_with_a_shadow_serves_identically_and_its_metrics_move_in_a_live_scrape",
          "the scrape shows no shadow agreement: the Grafana row stays flat"),
]

if __name__ == "__main__":
    run.BREAKS = LIFECYCLE_BREAKS
    sys.exit(run.main())
