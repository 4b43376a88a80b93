"""`deer-worker export`: the serve choice, the accuracy gate vs the .pt, the model's preprocessing (never
assumed, never applied twice), rect calibration shapes, the shipped demo model folder; and end to end: the
demo checkpoint -> static FP32 + INT8 IR, validated on the held-out split and benched."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import DEMO, GENEROUS_BOUND, ROOT
from worker.tools import export



# An export (torch and ultralytics imported, two IRs converted, INT8 calibration, the card's validation and
# latency) has no measure of its own in host_pace: it is counted in model loads of this host, EXPORT_LOADS of
# them (the export here took 9 loads' time, 28 s at 3.2 s a load; the bound is ten times EXPORT_LOADS loads).
EXPORT_LOADS = 30
HELDOUT_IMAGES = 50  # heldout.yaml: the images a validate runs through each model


def _cli(*args, timeout: float):
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, "YOLO_OFFLINE": "1"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory, host_pace):
    out = tmp_path_factory.mktemp("export")
    # calibrate on images that are neither trained on nor held out: the demo samples
    calib = out / "calib.yaml"
    calib.write_text(yaml.safe_dump({"path": str(DEMO / "samples"), "train": ".", "val": ".", "names": {0: "deer"}}))
    result = _cli("export", str(DEMO / "deer-yolo26n.pt"), "--data", str(calib), "--imgsz", "320", "--int8",
                  "--static", "--heads", "end2end", "--fraction", "1.0", "--out", str(out / "deer"),
                  timeout=host_pace.bound(loads=EXPORT_LOADS))
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "deer"


FP32_DIR, INT8_DIR = "deer-yolo26n_static_end2end_fp32_openvino_model", "deer-yolo26n_static_end2end_int8_openvino_model"


@pytest.mark.reference
def test_export_writes_both_irs_and_a_model_card(exported):
    fp32, int8 = exported / FP32_DIR, exported / INT8_DIR
    assert (fp32 / "metadata.yaml").exists() and (int8 / "metadata.yaml").exists()
    card = json.loads((exported / "MODEL_CARD.json").read_text())
    assert len(card["checkpoint_sha256"]) == 64 and card["irs"][INT8_DIR]["calibration_images"] == 8
    assert card["irs"][INT8_DIR]["calibration_shapes"] == [[320, 320]] and card["serve"] in card["irs"]
    assert yaml.safe_load((fp32 / "metadata.yaml").read_text())["end2end"] is True
    assert yaml.safe_load((int8 / "metadata.yaml").read_text())["precision"] == "int8"


@pytest.mark.reference
def test_int8_drop_within_the_gate_and_int8_serves(exported, tmp_path, host_pace):
    fp32, int8 = exported / FP32_DIR, exported / INT8_DIR
    report = tmp_path / "val.json"
    result = _cli("validate", "--model", str(fp32), "--model", str(int8), "--data", str(DEMO / "heldout.yaml"),
                  "--split", "val", "--max-drop-map50", "0.03", "--max-drop-map", "0.05", "--out", str(report),
                  timeout=host_pace.bound(loads=4, batches=2 * HELDOUT_IMAGES))  # imports, two IRs, 50 images each
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    from worker.inference.detector import Detector

    report = json.loads(report.read_text())
    assert [m["weights"] for m in report["models"]] == ["fp32", "int8"] and report["gate"]["passed"]
    # served through the worker's detector, the fresh INT8 IR finds the deer FP32 finds, in the same place
    fp32_detector, int8_detector = Detector(fp32), Detector(int8)
    assert (fp32_detector.spec.weights, int8_detector.spec.weights) == ("fp32", "int8")
    data = (DEMO / "samples" / "night_640x360_deer.jpg").read_bytes()  # FP32 0.69: a clear deer
    reference = fp32_detector.detect(data, confidence=0.25).detections
    served = int8_detector.detect(data, confidence=0.25).detections
    assert len(reference) >= 1 and len(served) >= 1, (reference, served)
    top = reference.xyxy[reference.confidence.argmax()]
    best = served.xyxy[served.confidence.argmax()]
    inter = max(0.0, min(top[2], best[2]) - max(top[0], best[0])) * max(0.0, min(top[3], best[3]) - max(top[1], best[1]))
    union = (top[2] - top[0]) * (top[3] - top[1]) + (best[2] - best[0]) * (best[3] - best[1]) - inter
    assert inter / union >= 0.5 and abs(served.confidence.max() - reference.confidence.max()) <= 0.15


@pytest.mark.reference
def test_bench_runs_on_both(exported, tmp_path, host_pace):
    out = tmp_path / "bench.json"
    result = _cli("bench", "--model", str(exported / FP32_DIR), "--model",
                  str(exported / INT8_DIR), "--seconds", "1", "--out", str(out),
                  timeout=host_pace.bound(loads=8, batches=20))  # two IRs compiled and benched: ~5 loads' time here
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    weights = {r["weights"] for r in report["results"]}
    assert weights == {"fp32", "int8"}, report["results"]
    for r in report["results"]:
        assert 0 < r["latency"]["p50_ms"] and r["latency"]["iterations"] >= 1 and r["throughput"]["images_per_s"] > 0
    names = {w: {r["name"] for r in report["results"] if r["weights"] == w} for w in ("fp32", "int8")}
    pairs = {(s["fp32"], s["int8"]) for s in report["speedups"]}  # the two IRs were paired as one model
    assert pairs and {f for f, _ in pairs} == names["fp32"] and {i for _, i in pairs} == names["int8"], pairs


# --- units: the serve choice, the gate, the model's preprocessing ------------------------------------
def _ir(head, weights, ms, accuracy=None, within=None):
    entry = {"head": head, "weights": weights, "dynamic": True, "latency_ms": {"shape": [192, 320], "f32_p50": ms}}
    if accuracy:
        entry.update(accuracy={"mAP50": accuracy[0], "mAP50-95": accuracy[1]}, within_gate=within)
    return entry


def test_serve_is_the_fastest_ir_within_the_gate():
    irs = {"e2e_fp32": _ir("end2end", "fp32", 10.0, (0.90, 0.60), False),
           "raw_fp32": _ir("raw", "fp32", 11.0, (0.95, 0.70), True),
           "raw_int8": _ir("raw", "int8", 6.0, (0.949, 0.698), True),
           "e2e_int8": _ir("end2end", "int8", 5.0, (0.89, 0.58), False)}
    assert export.choose_serve(irs, measured=True)[0] == "raw_int8"
    irs["raw_int8"]["within_gate"] = False
    assert export.choose_serve(irs, measured=True)[0] == "raw_fp32"


def test_with_no_ir_in_the_gate_the_most_accurate_serves_and_it_says_so():
    irs = {"a": _ir("end2end", "fp32", 1.0, (0.90, 0.60), False), "b": _ir("raw", "fp32", 9.0, (0.91, 0.65), False)}
    name, reason = export.choose_serve(irs, measured=True)
    assert name == "b" and "NO IR" in reason


def test_without_data_the_raw_fp32_head_serves():
    irs = {"e2e": _ir("end2end", "fp32", 1.0), "raw": _ir("raw", "fp32", 2.0), "raw8": _ir("raw", "int8", 0.5)}
    name, reason = export.choose_serve(irs, measured=False)
    assert name == "raw" and "not measured" in reason


@pytest.mark.parametrize("accuracy, within", [((0.95, 0.80), True), ((0.9471, 0.7951), True),
                                              ((0.9465, 0.80), False), ((0.95, 0.794), False), ((0.99, 0.9), True)])
def test_gate_verdict_limits_both_metrics(accuracy, within):
    delta, ok = export.gate_verdict({"mAP50": accuracy[0], "mAP50-95": accuracy[1]}, {"mAP50": 0.95, "mAP50-95": 0.80},
                                    export.DEFAULT_MAX_DROP_MAP50, export.DEFAULT_MAX_DROP_MAP)
    assert ok is within and delta["mAP50"] == pytest.approx(accuracy[0] - 0.95)


def _parse(*argv, pt=DEMO / "deer-yolo26n.pt"):
    import argparse

    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    return parser.parse_args([str(pt), *argv])


@pytest.mark.parametrize("argv, message", [
    (["--clahe"], "--clahe needs --clahe-clip"),
    (["--clahe-clip", "3.0"], "without --clahe"),
    (["--clahe", "--clahe-clip", "0"], "must be > 0"),
    (["--conf", "1.5"], "--conf must be in"),
    (["--heads", "raw,fancy"], "--heads"),
    (["--int8"], "--int8 needs --data"),
    (["--iou", "0"], "--iou must be in"),
    (["--fraction", "1.5"], "--fraction must be in"),
    (["--max-calibration", "0"], "--max-calibration must be at least 1"),
    (["--max-drop-map50", "-0.1"], "--max-drop-map50 must be a fraction"),
    (["--imgsz", "16"], "--imgsz must be at least 32"),
    (["--deer-class", ","], "--deer-class: give a class name"),
    (["--deer-class", "deer,elk"], r"--deer-class deer,elk: alert class \['elk'\] not among the model's classes \['deer'\]"),
])
def test_bad_export_options_are_refused_before_exporting(argv, message):
    from worker.errors import UsageError

    with pytest.raises(UsageError, match=message):
        export._checked_inputs(_parse(*argv))


def test_clahe_without_its_clip_fails_in_one_line_on_the_command_line():
    result = _cli("export", str(DEMO / "deer-yolo26n.pt"), "--clahe", timeout=GENEROUS_BOUND)  # refused at once
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deer-worker: usage: --clahe needs --clahe-clip"), lines


def test_data_preprocessed_by_flag_or_yaml_key(tmp_path):
    plain, marked = tmp_path / "plain.yaml", tmp_path / "marked.yaml"
    plain.write_text("val: x\nnames: [deer]\n")
    marked.write_text(f"val: x\nnames: [deer]\n{export.PREPROCESSED_KEY}: true\n")
    assert export.data_is_preprocessed(plain, False) is False
    assert export.data_is_preprocessed(plain, True) is True
    assert export.data_is_preprocessed(marked, False) is True


def test_calibration_mixes_the_worker_rect_shapes_and_applies_clahe_only_when_asked():
    """16:9 and 4:3 images at their own rect shape, every third at 1:1: the shapes the worker serves at 320."""
    images = sorted((DEMO / "samples").glob("*_640x360_*.jpg"))[:2] + sorted((DEMO / "heldout" / "images").glob("*.jpg"))[:4]
    tensors = export.calibration_tensors(images, 320)
    shapes = {t.shape[2:] for t in tensors}
    assert (320, 320) in shapes and (192, 320) in shapes and shapes <= {(192, 320), (256, 320), (320, 320)}
    assert [t.shape[2:] for t in export.calibration_tensors(images[:2], 320, square=True)] == [(320, 320)] * 2
    clahe = export.calibration_tensors(images[:1], 320, clahe=(3.0, (8, 8)))[0]
    assert not np.allclose(clahe, tensors[0])  # CLAHE changed the pixels: applied once, when asked


def test_calibration_inputs_are_the_worker_inputs_pixel_for_pixel(tmp_path):
    """One way to build an input: at an odd size (226x282 at 320) a letterbox sized by its target instead of
    imgsz scales to 256x319, not ultralytics' 256x320; the model's CLAHE (clip 3.0, 8x8) is the worker's own.
    The calibration tensor is exactly the input the worker serves, which is the CLAHE'd image resized to
    fill 256x320 (no padding at this size)."""
    import cv2

    from worker.inference.imagecodec import decode
    from worker.inference.preprocess import Preprocessing, apply_clahe, prepare_rect

    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 255, (282, 226, 3), dtype=np.uint8), (9, 9), 0)
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), image)
    cases = ((None, Preprocessing(), image),
             ((3.0, (8, 8)), Preprocessing(clahe=True, clahe_clip=3.0, clahe_tiles=(8, 8)), apply_clahe(image, 3.0, (8, 8))))
    for clahe, preprocessing, source in cases:
        served, _ = prepare_rect(decode(path.read_bytes()), 320, preprocessing=preprocessing)
        assert np.array_equal(served, cv2.resize(source, (256, 320), interpolation=cv2.INTER_LINEAR))
        expected = np.ascontiguousarray(served[..., ::-1].transpose(2, 0, 1)[None], np.float32) / 255.0
        assert np.array_equal(export.calibration_tensors([path], 320, clahe=clahe)[0], expected)
    assert not np.array_equal(cases[0][2], cases[1][2])  # CLAHE changes these pixels


def test_ir_folders_say_whether_they_are_dynamic_or_static():
    assert export.ir_dir_name("m", "raw", "fp32") == "m_dynamic_raw_fp32_openvino_model"
    assert export.ir_dir_name("m", "end2end", "int8", dynamic=False) == "m_static_end2end_int8_openvino_model"


def test_rect_calibration_shapes_at_640():
    assert export.calibration_shapes(640) == [(384, 640), (480, 640), (640, 640)]


# --- the shipped demo model folder --------------------------------------------------------------------
def test_demo_folder_card_names_a_dynamic_ir_to_serve_and_every_ir_knows_its_preprocessing():
    card = json.loads((DEMO / "MODEL_CARD.json").read_text())
    assert set(card) >= {"name", "version", "serve", "checkpoint", "imgsz", "preprocessing", "deer_class",
                         "confidence", "iou", "irs", "reference"}
    assert card["preprocessing"] == {"clahe": False, "clahe_clip": None, "clahe_tiles": [8, 8],
                                     "data_preprocessed": False}
    assert card["deer_class"] == "deer" and card["confidence"] == 0.25 and card["serve"] in card["irs"]
    heads = {(e["head"], e["weights"]) for e in card["irs"].values()}
    assert heads == {("end2end", "fp32"), ("end2end", "int8"), ("raw", "fp32"), ("raw", "int8")}
    for name, entry in card["irs"].items():
        meta = yaml.safe_load((DEMO / name / "metadata.yaml").read_text())
        assert meta["args"]["dynamic"] is True and entry["dynamic"] is True and meta["end2end"] == (entry["head"] == "end2end")
        assert meta["deer_worker"] == {"preprocessing": card["preprocessing"], "deer_class": "deer", "confidence": 0.25}
        assert set(entry["delta_vs_pt"]) == {"mAP50", "mAP50-95"} and entry["within_gate"] == (
            -entry["delta_vs_pt"]["mAP50"] <= card["gate"]["max_drop_map50"] + 1e-9
            and -entry["delta_vs_pt"]["mAP50-95"] <= card["gate"]["max_drop_map"] + 1e-9)
    assert card["irs"][card["serve"]]["within_gate"], "the demo serves an IR that keeps the .pt's accuracy"


# --- the alert classes, checked against the checkpoint before anything slow -------------------------------
def renamed_checkpoint(folder, names: dict):
    """The demo checkpoint with its class(es) renamed: a one-class model whose class is not spelled deer."""
    import torch

    ckpt = torch.load(str(DEMO / "deer-yolo26n.pt"), map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        if ckpt.get(key) is not None:
            ckpt[key].names = dict(names)
    path = folder / "blob-yolo26n.pt"
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def blob_pt(tmp_path_factory):
    pytest.importorskip("torch")
    return renamed_checkpoint(tmp_path_factory.mktemp("blob"), {0: "blob"})


@pytest.mark.parametrize("argv, alert_classes", [
    ([], ("blob",)),  # one class, no deer: it alerts on its class
    (["--deer-class", "Blob"], ("blob",)),  # named in any case, recorded as the model spells it
    (["--deer-class", "blob,blob", "--deer-class", "BLOB"], ("blob",)),  # comma-separated and repeatable
])
def test_the_alert_classes_resolve_against_the_checkpoint(blob_pt, argv, alert_classes):
    checked = export._checked_inputs(_parse(*argv, pt=blob_pt))
    assert checked.names == ("blob",) and checked.alert_classes == alert_classes and checked.imgsz == 320


def test_a_deer_class_the_model_lacks_stops_within_seconds_naming_its_classes(blob_pt, tmp_path):
    import time

    started = time.monotonic()
    result = _cli("export", str(blob_pt), "--deer-class", "deer", "--out", str(tmp_path / "out"), timeout=GENEROUS_BOUND)
    took = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0] == ("deer-worker: usage: --deer-class deer: alert class ['deer'] not among the model's classes "
                        "['blob']"), lines
    assert not (tmp_path / "out").exists() and took < GENEROUS_BOUND  # nothing exported: the checkpoint read only


@pytest.mark.reference
def test_a_blob_model_exported_with_its_class_serves_deer_detected(blob_pt, tmp_path, host_pace):
    """End to end: export (one static raw FP32 IR, nothing measured), the card and IR record the alert class,
    and the worker's result for a deer snapshot says deer_detected."""
    from worker.inference.detector import Detector
    from worker.jobqueue.results import ModelInfo, build_message
    from worker.model.card import ModelCard

    out = tmp_path / "blob"
    result = _cli("export", str(blob_pt), "--deer-class", "blob", "--static", "--heads", "raw", "--out", str(out),
                  timeout=host_pace.bound(loads=EXPORT_LOADS))
    assert result.returncode == 0, result.stderr[-3000:]
    card = ModelCard.read(out)
    assert card.alert_classes == ("blob",) and json.loads((out / "MODEL_CARD.json").read_text())["schema_version"] == 2
    meta = yaml.safe_load((out / card.serve / "metadata.yaml").read_text())
    assert meta["deer_worker"]["alert_classes"] == ["blob"]
    detector = Detector(out)
    assert detector.spec.alert_classes == ("blob",)
    served = detector.detect((DEMO / "samples" / "night_640x360_deer.jpg").read_bytes(), confidence=0.25)
    info = ModelInfo(detector.spec.name, detector.spec.version, detector.spec.weights, detector.precision,
                     detector.spec.alert_classes)
    message = build_message(status="ok", job_id="j", camera_id="c", captured_at=None, worker="w", model=info,
                            detections=served.detections)
    assert message["deer_detected"] is True and {d["class_name"] for d in message["detections"]} == {"blob"}
