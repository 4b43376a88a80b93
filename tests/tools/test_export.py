"""End to end: the demo checkpoint -> FP32 + INT8 IR (`deer-worker export`), validated on the held-out
split (`deer-worker validate`, accuracy gate) and benched (`deer-worker bench`); the INT8 IR serves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from conftest import DEMO, ROOT

pytestmark = pytest.mark.reference


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env={**__import__("os").environ, "YOLO_OFFLINE": "1"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    # calibrate on images that are neither trained on nor held out: the demo samples
    calib = out / "calib.yaml"
    calib.write_text(yaml.safe_dump({"path": str(DEMO / "samples"), "train": ".", "val": ".", "names": {0: "deer"}}))
    result = _cli("export", str(DEMO / "deer-yolo26n.pt"), "--data", str(calib), "--imgsz", "320", "--int8",
                  "--fraction", "1.0", "--out", str(out / "deer"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "deer"


def test_export_writes_both_irs_and_a_model_card(exported):
    fp32, int8 = exported / "deer-yolo26n_openvino_model", exported / "deer-yolo26n_int8_openvino_model"
    assert (fp32 / "metadata.yaml").exists() and (int8 / "metadata.yaml").exists()
    card = json.loads((exported / "MODEL_CARD.json").read_text())
    assert len(card["source_sha256"]) == 64 and card["int8"]["calibration_images"] == 8
    assert yaml.safe_load((fp32 / "metadata.yaml").read_text())["end2end"] is True
    assert yaml.safe_load((int8 / "metadata.yaml").read_text())["precision"] == "int8"


def test_int8_drop_within_the_gate_and_int8_serves(exported, tmp_path):
    fp32, int8 = exported / "deer-yolo26n_openvino_model", exported / "deer-yolo26n_int8_openvino_model"
    report = tmp_path / "val.json"
    result = _cli("validate", "--model", str(fp32), "--model", str(int8), "--data", str(DEMO / "heldout.yaml"),
                  "--split", "val", "--max-drop", "0.03", "--out", str(report))
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


def test_bench_runs_on_both(exported, tmp_path):
    out = tmp_path / "bench.json"
    result = _cli("bench", "--model", str(exported / "deer-yolo26n_openvino_model"), "--model",
                  str(exported / "deer-yolo26n_int8_openvino_model"), "--seconds", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    weights = {r["weights"] for r in report["results"]}
    assert weights == {"fp32", "int8"}, report["results"]
    for r in report["results"]:
        assert 0 < r["latency"]["p50_ms"] and r["latency"]["iterations"] >= 1 and r["throughput"]["images_per_s"] > 0
    names = {w: {r["name"] for r in report["results"] if r["weights"] == w} for w in ("fp32", "int8")}
    pairs = {(s["fp32"], s["int8"]) for s in report["speedups"]}  # the two IRs were paired as one model
    assert pairs and {f for f, _ in pairs} == names["fp32"] and {i for _, i in pairs} == names["int8"], pairs
