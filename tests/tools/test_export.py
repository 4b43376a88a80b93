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
                  "--split", "val", "--max-drop", "0.03", "--json", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    from worker.inference.detector import Detector

    detector = Detector(int8)
    assert detector.spec.weights == "int8"
    assert detector.detect((DEMO / "samples" / "day_640x360_deer.jpg").read_bytes()).detections is not None


def test_bench_runs_on_both(exported, tmp_path):
    out = tmp_path / "bench.json"
    result = _cli("bench", "--model", str(exported / "deer-yolo26n_openvino_model"), "--model",
                  str(exported / "deer-yolo26n_int8_openvino_model"), "--seconds", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(out.read_text())
