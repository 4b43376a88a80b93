"""The deliberate breaks the rect-input, model-preprocessing and PyTorch-parity tests catch (issue 13,
inference side), run with run.py's machinery:

    .venv/bin/python tests/mutations/rect_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way serving could drift from what the user's PyTorch predict does: the wrong input
shape, a square staging buffer shared between batches, a batch mixing shapes, the model's CLAHE or
threshold not applied, a camera allowed to contradict the model. The parity breaks run PyTorch (about
a minute apiece).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

RECT, PARITY, CONFIG = "tests/inference/test_rect.py::", "tests/inference/test_parity_pt.py::", "tests/test_config.py::"
ADMISSION = "tests/jobqueue/test_admission.py::"
PRE, DET, CARD = "worker/inference/preprocess.py", "worker/inference/detector.py", "worker/model/card.py"

RECT_BREAKS = [
    # --- the input shape and the letterbox ---------------------------------------------------------------
    Break("rect-shape-always-square", PRE,
          "    return (max(new_h + (imgsz - new_h) % STRIDE, floor), max(new_w + (imgsz - new_w) % STRIDE, floor))",
          "    return (imgsz, imgsz)",
          RECT + "test_rect_letterbox_equals_ultralytics_for_odd_sizes[320]",
          "every snapshot pays for a square input again"),
    Break("rect-shape-rounds-down", PRE,
          "    return (max(new_h + (imgsz - new_h) % STRIDE, floor), max(new_w + (imgsz - new_w) % STRIDE, floor))",
          "    return (max(new_h - new_h % STRIDE, floor), max(new_w - new_w % STRIDE, floor))",
          RECT + "test_known_shapes_are_ultralytics_rect_shapes[640]",
          "a 16:9 input cut to 352x640 instead of padded to 384x640"),
    Break("letterbox-scaled-to-the-target", PRE,
          "    limit_h, limit_w = (target_h, target_w) if imgsz is None else (imgsz, imgsz)",
          "    limit_h, limit_w = (target_h, target_w)",
          RECT + "test_rect_letterbox_equals_ultralytics_for_odd_sizes[320]",
          "the image scaled to fit the rect shape, not imgsz: a pixel off ultralytics for some sizes"),
    Break("no-minimum-input-side", PRE, "    floor = min_input_side(imgsz)\n", "    floor = STRIDE\n",
          RECT + "test_extreme_aspect_ratios_keep_a_minimum_input_side",
          "a 4000x100 snapshot gets an input too small for the end-to-end head's 300 top-k"),
    Break("shared-staging-buffer", PRE,
          "    out = np.empty((*input_shape(*image.shape[:2], imgsz), 3), np.uint8)",
          "    shape = input_shape(*image.shape[:2], imgsz)\n"
          "    out = prepare_rect.__dict__.setdefault(shape, np.empty((*shape, 3), np.uint8))",
          RECT + "test_prepared_batches_own_their_tensors",
          "batch N+1's letterbox overwrites batch N's input while N waits to run"),
    # --- the detector ------------------------------------------------------------------------------------
    Break("batch-not-split-by-shape", DET,
          "prepared.groups.setdefault(item.tensor.shape[:2], [])", "prepared.groups.setdefault((0, 0), [])",
          RECT + "test_a_mixed_aspect_batch_is_split_by_shape_and_each_runs_at_its_own_shape",
          "snapshots of different shapes stacked into one batch"),
    Break("only-the-first-shape-warmed", DET,
          "        for shape in self.warm_shapes:\n", "        for shape in self.warm_shapes[:1]:\n",
          RECT + "test_configured_shapes_are_compiled_and_warmed_before_the_first_snapshot",
          "a live 4:3 snapshot waits for a compile"),
    Break("batch-wide-confidence", DET,
          "flt = DetectionFilter(confidence=item.settings.confidence,",
          "flt = DetectionFilter(confidence=chunk[0].settings.confidence,",
          RECT + "test_each_item_keeps_its_own_confidence_and_classes",
          "one job's conf (v2 contract) applied to every job of its batch"),
    Break("static-ir-silent", DET, '        if not self.spec.dynamic:\n            log.warning(',
          '        if False:\n            log.warning(',
          RECT + "test_a_static_ir_serves_square_with_a_warning",
          "a static IR serves square and nobody is told re-exporting makes it faster"),
    # --- the model's own preprocessing -------------------------------------------------------------------
    Break("model-preprocessing-ignored", DET,
          "with_model_defaults(settings or CameraSettings(), self.spec.preprocessing, self.spec.confidence)",
          "with_model_defaults(settings or CameraSettings(), None, self.spec.confidence)",
          RECT + "test_an_export_folder_serves_its_card_ir_with_the_models_preprocessing",
          "a snapshot with no camera id served without the CLAHE the model was trained with"),
    Break("model-confidence-ignored", DET,
          "with_model_defaults(settings or CameraSettings(), self.spec.preprocessing, self.spec.confidence)",
          "with_model_defaults(settings or CameraSettings(), self.spec.preprocessing, None)",
          RECT + "test_an_export_folder_serves_its_card_ir_with_the_models_preprocessing",
          "the model card's threshold not the default"),
    Break("card-clip-assumed", CARD,
          "float(clip) if clip is not None else defaults.clahe_clip", "defaults.clahe_clip",
          RECT + "test_an_export_folder_serves_its_card_ir_with_the_models_preprocessing",
          "clip 2.0 assumed for a model trained with 3.0"),
    Break("contradiction-accepted", DET,
          "                check_against_model(settings, self.spec.preprocessing)\n", "",
          RECT + "test_a_camera_contradicting_the_model_is_refused_at_load_unless_forced[camera0]",
          "clahe: false on a CLAHE model served without a word"),
    Break("clip-never-required", CARD, "    if clahe and clip is None:", "    if False:",
          RECT + "test_a_bare_ir_knows_its_preprocessing_from_metadata",
          "a CLAHE model without a recorded clip served with an assumed one"),
    Break("shapes-unvalidated", "worker/config.py", "                parse_shape(shape)\n", "                pass\n",
          CONFIG + "test_a_bad_shape_is_named", "a YAML 16:9 (969) accepted and failing at model load"),
    # --- parity with PyTorch predict ---------------------------------------------------------------------
    Break("square-against-pytorch-rect", DET, "        self.rect = rect and self.spec.dynamic\n",
          "        self.rect = False\n", PARITY + "test_rect_raw_head_matches_pytorch_predict",
          "a dynamic IR served square: not what PyTorch predict runs"),
    Break("clahe-clip-fixed", PRE, "cv2.createCLAHE(clipLimit=key[0], tileGridSize=key[1])",
          "cv2.createCLAHE(clipLimit=2.0, tileGridSize=key[1])",
          PARITY + "test_a_clahe_model_card_matches_pytorch_on_clahe_pixels",
          "CLAHE at clip 2.0 whatever the model card says (the user's 3.0 vs 2.0)"),
    # --- the model card's NMS IoU and a v2 job's camera override (issue 13, open items 2-3) ------------
    Break("card-iou-ignored", DET,
          "        self.iou = iou if iou is not None else self.spec.iou if self.spec.iou is not None else DEFAULT_IOU",
          "        self.iou = iou if iou is not None else DEFAULT_IOU",
          RECT + "test_the_model_cards_iou_is_the_nms_default_unless_the_config_sets_one",
          "a raw-head model served with 0.65 though its card records the IoU it was exported for"),
    Break("config-iou-beats-the-card", "worker/inference/build.py",
          "iou=(config.iou or None) if iou is None else iou,", "iou=(config.iou or 0.65) if iou is None else iou,",
          RECT + "test_the_model_cards_iou_is_the_nms_default_unless_the_config_sets_one",
          "the worker's built-in 0.65 beats the card when worker.yaml sets no IoU"),
    Break("v2-override-contradicting-the-model-served", "worker/jobqueue/admission.py",
          "    if clashes:\n        return Reject(", "    if clashes and False:\n        return Reject(",
          ADMISSION + "test_a_v2_override_contradicting_the_models_preprocessing_fails_that_job_unless_the_worker_forces[clahe-off]",
          "a job turns CLAHE off for a CLAHE-trained model and is served, as before issue 13's item 3"),
    Break("v2-override-refusal-not-wired", "worker/jobqueue/consumer.py",
          "                                       preprocessing=self.detector.spec.preprocessing)",
          "                                       )",
          "tests/jobqueue/test_consumer.py::test_a_v2_camera_override_contradicting_the_models_clahe_fails_alone_counted",
          "the consumer never hands admission the model's preprocessing: every override is served"),
    Break("v2-job-forces-its-own-override", "worker/jobqueue/admission.py",
          "or config.force_preprocessing or configured.force_preprocessing:",
          "or config.force_preprocessing or configured.force_preprocessing "
          "or bool(snapshot.camera.get(\"force_preprocessing\")):",
          ADMISSION + "test_a_v2_override_contradicting_the_models_preprocessing_fails_that_job_unless_the_worker_forces[job-cannot-force]",
          "the job's own force_preprocessing key lets the sender override the model"),
    Break("worker-force-ignored", "worker/jobqueue/admission.py",
          "or config.force_preprocessing or configured.force_preprocessing:", "or configured.force_preprocessing:",
          ADMISSION + "test_a_v2_override_contradicting_the_models_preprocessing_fails_that_job_unless_the_worker_forces[other-clip]",
          "worker.yaml force_preprocessing: true is accepted and ignored"),
    Break("end2end-gets-nms", "worker/inference/postprocess.py",
          "    rows = output[mask][: flt.max_detections]\n",
          "    rows = output[mask][: flt.max_detections]\n    rows = rows[nms(rows[:, :4], rows[:, 4], 0.3)]\n",
          PARITY + "test_rect_end2end_head_matches_pytorch_predict_with_nms_false",
          "the one-to-one head's output is put through NMS, which PyTorch predict(nms=False) does not do"),
]

if __name__ == "__main__":
    run.BREAKS = RECT_BREAKS
    sys.exit(run.main())
