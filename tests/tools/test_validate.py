"""deer-worker validate: the gate through the command, and agreement with ultralytics val on the demo model."""

from __future__ import annotations

import argparse
import json

import pytest

from conftest import DEMO, FP32_MODEL, INT8_MODEL, write_dataset
from worker.tools import validate
from worker.errors import ConfigError
from worker.evaluation.metrics import DetectionMetrics
from worker.tools.reference import others_compile_pinned

HELDOUT_YAML = DEMO / "heldout.yaml"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    validate.add_arguments(parser)
    return parser.parse_args(list(argv))


# --- the gate ---------------------------------------------------------------------------------------
def fake_result(model: str, map50: float, map50_95: float) -> validate.ModelResult:
    metrics = DetectionMetrics(images=1, instances=1, precision=0.9, recall=0.9, map50=map50, map75=map50_95,
                               map50_95=map50_95, per_class=())
    return validate.ModelResult(model, model, "fp32", "f32", metrics, 1.0)


@pytest.mark.parametrize("second, exit_code", [
    ((0.95, 0.80), 0), ((0.9471, 0.7951), 0),  # equal; just inside both limits (0.3 and 0.5 points)
    ((0.9465, 0.80), 1), ((0.95, 0.794), 1),  # mAP50 alone, mAP50-95 alone past its limit
    ((0.99, 0.90), 0)])
def test_gate_on_map50_and_map50_95_drop(tmp_path, monkeypatch, capsys, second, exit_code):
    scores = {"ref": (0.95, 0.80), "new": second}
    monkeypatch.setattr(validate, "evaluate_model",
                        lambda model, *a, **k: fake_result(model, *scores[model]))
    data = write_dataset(tmp_path, "path: ds\nval: images/val\nnames: [deer]\n")
    out = tmp_path / "r.json"
    code = validate.run(parse("--model", "ref", "--model", "new", "--data", str(data), "--out", str(out)))
    assert code == exit_code
    report = json.loads(out.read_text())
    assert report["gate"]["max_drop"] == {"mAP50": 0.003, "mAP50-95": 0.005}
    assert report["gate"]["passed"] == (exit_code == 0) and report["gate"]["failed"] == (["new"] if exit_code else [])
    assert report["models"][1]["drop"]["mAP50"] == pytest.approx(0.95 - second[0])
    assert report["models"][1]["drop"]["mAP50-95"] == pytest.approx(0.80 - second[1])
    printed = capsys.readouterr().out
    assert ("FAIL" if exit_code else "PASS") in printed and "mAP50-95" in printed
    assert report["host"].startswith("host: ") and printed.splitlines()[0] == report["host"]


def test_gate_limits_are_options(tmp_path, monkeypatch):
    scores = {"ref": (0.95, 0.80), "new": (0.93, 0.77)}
    monkeypatch.setattr(validate, "evaluate_model", lambda model, *a, **k: fake_result(model, *scores[model]))
    data = write_dataset(tmp_path, "path: ds\nval: images/val\nnames: [deer]\n")
    args = ("--model", "ref", "--model", "new", "--data", str(data))
    assert validate.run(parse(*args)) == 1
    assert validate.run(parse(*args, "--max-drop-map50", "0.021", "--max-drop-map", "0.031")) == 0
    assert validate.run(parse(*args, "--max-drop-map50", "0.021")) == 1  # mAP50-95 still past 0.5 points


def test_a_pt_is_the_reference_and_irs_gate_on_ultralytics_scores(tmp_path, monkeypatch):
    """With a .pt, the .pt's ultralytics-val scores are the reference and each IR's ultralytics-val scores
    (not its served-path scores) are compared with them, wherever the .pt stands in the list."""
    import worker.tools.reference as reference

    pt = tmp_path / "best.pt"
    pt.write_bytes(b"x")
    scored = {str(pt): {"mAP50": 0.95, "mAP50-95": 0.80, "precision": 0.9, "recall": 0.9},
              "good": {"mAP50": 0.949, "mAP50-95": 0.798, "precision": 0.9, "recall": 0.9},
              "bad": {"mAP50": 0.94, "mAP50-95": 0.80, "precision": 0.9, "recall": 0.9}}
    monkeypatch.setattr(reference, "ultralytics_val", lambda model, *a, **k: dict(scored[str(model)]))
    monkeypatch.setattr(reference, "checkpoint_imgsz", lambda pt: 320)
    monkeypatch.setattr(validate, "evaluate_model", lambda model, *a, **k: fake_result(model, 0.10, 0.05))
    monkeypatch.setattr("worker.tools.export.require_export_extra", lambda int8: None)
    data = write_dataset(tmp_path, "path: ds\nval: images/val\nnames: [deer]\n")
    out = tmp_path / "r.json"
    assert validate.run(parse("--model", "good", "--model", str(pt), "--data", str(data), "--out", str(out))) == 0
    report = json.loads(out.read_text())
    assert [m["name"] for m in report["models"]] == ["best.pt", "good"] and report["gate"]["reference"] == str(pt)
    assert report["models"][1]["drop"] == {"mAP50": pytest.approx(0.001), "mAP50-95": pytest.approx(0.002)}
    assert validate.run(parse("--model", str(pt), "--model", "bad", "--data", str(data))) == 1


def test_two_pts_or_a_missing_pt_are_refused(tmp_path):
    from worker.errors import MissingFileError, UsageError

    data = write_dataset(tmp_path, "path: ds\nval: images/val\nnames: [deer]\n")
    with pytest.raises(UsageError, match="one .pt"):
        validate.run(parse("--model", "a.pt", "--model", "b.pt", "--data", str(data)))
    with pytest.raises(MissingFileError, match="not found"):
        validate.run(parse("--model", str(tmp_path / "gone.pt"), "--data", str(data)))


def test_single_model_has_no_gate(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "evaluate_model", lambda model, *a, **k: fake_result(model, 0.1, 0.05))
    data = write_dataset(tmp_path, "path: ds\nval: images/val\nnames: [deer]\n")
    assert validate.run(parse("--model", "only", "--data", str(data))) == 0


def test_bad_labels_fail_before_any_model_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(validate, "evaluate_model", lambda *a, **k: pytest.fail("model ran despite bad labels"))
    data = write_dataset(tmp_path, "path: ds\nval: images/val\nnames: [deer]\n")
    (tmp_path / "ds" / "labels" / "val" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")  # class 1 of 1
    with pytest.raises(ConfigError, match="out of range"):
        validate.run(parse("--model", "m", "--data", str(data)))


# --- on the demo model ------------------------------------------------------------------------------
def test_demo_models_through_the_served_path(tmp_path):
    """FP32 vs INT8 on the held-out split: a trained model finds the deer, the INT8 export is within the
    default gate of it, and the reported drop is the difference of the two reported mAP50s. The gate's
    verdict is asserted, not recomputed from the report: an INT8 that got worse fails here."""
    out = tmp_path / "r.json"
    code = validate.run(parse("--model", str(FP32_MODEL), "--model", str(INT8_MODEL), "--data", str(HELDOUT_YAML),
                              "--max-drop-map50", "0.02", "--max-drop-map", "0.03", "--out", str(out)))
    report = json.loads(out.read_text())
    fp32, int8 = report["models"]
    for m in (fp32, int8):
        assert m["precision"] == "f32" and m["skipped"] == []
        assert m["metrics"]["images"] == 50 and m["metrics"]["instances"] > 0
        assert m["metrics"]["mAP50"] > 0.25, "a trained demo model finds deer; near 0 means boxes are mapped wrongly"
        assert 0 < m["metrics"]["mAP50-95"] <= m["metrics"]["mAP50"]
    assert int8["drop"]["mAP50"] == pytest.approx(fp32["metrics"]["mAP50"] - int8["metrics"]["mAP50"], abs=1e-6)
    assert int8["drop"]["mAP50"] <= 0.02, report  # the shipped INT8 is within 2 points
    assert code == 0 and report["gate"]["passed"] and report["gate"]["failed"] == []


@pytest.mark.reference
def test_agrees_with_ultralytics_val(tmp_path, monkeypatch):
    """Our validate vs YOLO(ir).val() on the same IR and split, both at f32.

    What ultralytics val does for a static-shape OpenVINO model: rect is forced off, images are resized
    with the long side to 320 (cv2.INTER_LINEAR, ceil) and LetterBox(320, auto=False, scaleup=False)
    pads them centred with 114: the same geometry as our letterbox for these 640x360 / 640x480 images.
    It scores in letterbox pixels, we in original pixels (a uniform scale: same IoUs up to rounding).
    Two real differences remain, both on purpose in the served path:
    - it decodes at full size; we may decode JPEGs at 1/2 (libjpeg DCT scaling, "reduced decode");
    - it scores predicted boxes unclipped (they may extend into the letterbox padding), while the
      worker clips boxes to the image, as ultralytics predict() does. Clipping can only raise the IoU
      of a box that crosses the border with a truth inside the image, and this split has deer at the
      edges, so the served mAP50-95 is higher (~2 points on the demo model).
    So: unclipped + full decode must agree within 0.5 points (it is the same computation); the served
    figures are printed for the record and held to a looser bound.
    """
    import numpy as np
    from ultralytics import YOLO

    import worker.inference.preprocess

    monkeypatch.setenv("YOLO_OFFLINE", "1")
    with others_compile_pinned("f32"):  # ultralytics would let the CPU pick bf16
        metrics = YOLO(str(FP32_MODEL), task="detect").val(
            data=str(HELDOUT_YAML), imgsz=320, batch=1, conf=0.001, iou=0.7, plots=False, verbose=False,
            device="cpu", project=str(tmp_path), name="val")
    box = metrics.box

    def ours(*flags: str) -> dict:
        out = tmp_path / "ours.json"
        validate.run(parse("--model", str(FP32_MODEL), "--data", str(HELDOUT_YAML), "--out", str(out), *flags))
        return json.loads(out.read_text())["models"][0]["metrics"]

    figures = {"served, full decode": ours("--no-reduced-decode"), "served, reduced decode": ours("--reduced-decode")}

    def unclipped(self, xyxy):  # BoxTransform.to_original without the clip to the image
        b = xyxy.astype(np.float32, copy=True)
        b[:, [0, 2]] = ((b[:, [0, 2]] - self.pad_x) / self.gain_x + self.crop_x0) * self.scale_x
        b[:, [1, 3]] = ((b[:, [1, 3]] - self.pad_y) / self.gain_y + self.crop_y0) * self.scale_y
        return b

    monkeypatch.setattr(worker.inference.preprocess.BoxTransform, "to_original", unclipped)
    figures["unclipped, full decode"] = ours("--no-reduced-decode")
    monkeypatch.undo()

    print(f"\n{'ultralytics val':<30} mAP50 {box.map50:.4f}  mAP50-95 {box.map:.4f}  P {box.mp:.4f}  R {box.mr:.4f}")
    for label, m in figures.items():
        print(f"{'ours, ' + label:<30} mAP50 {m['mAP50']:.4f}  mAP50-95 {m['mAP50-95']:.4f}  "
              f"P {m['precision']:.4f}  R {m['recall']:.4f}")
    same = figures["unclipped, full decode"]
    assert same["instances"] == int(metrics.nt_per_class.sum())  # both read the same labels
    assert same["mAP50"] == pytest.approx(float(box.map50), abs=0.005)
    assert same["mAP50-95"] == pytest.approx(float(box.map), abs=0.005)
    for label in ("served, full decode", "served, reduced decode"):
        assert figures[label]["mAP50"] == pytest.approx(float(box.map50), abs=0.02), label
        assert figures[label]["mAP50-95"] == pytest.approx(float(box.map), abs=0.03), label


@pytest.mark.reference
def test_the_pt_reference_row_and_its_own_dynamic_raw_ir_pass_the_default_gate(tmp_path):
    """The demo .pt scored by ultralytics val is the reference; its dynamic raw-head FP32 IR, scored the same
    way (val's rect shapes, same matcher), keeps its accuracy within the default 0.3 / 0.5 points, while the
    dynamic end-to-end IR (the one-to-one head) does not: exit 1 naming it."""
    raw = DEMO / "deer-yolo26n_dynamic_raw_fp32_openvino_model"
    end2end = DEMO / "deer-yolo26n_dynamic_end2end_fp32_openvino_model"
    out = tmp_path / "r.json"
    code = validate.run(parse("--model", str(DEMO / "deer-yolo26n.pt"), "--model", str(raw), "--model", str(end2end),
                              "--data", str(HELDOUT_YAML), "--out", str(out)))
    report = json.loads(out.read_text())
    pt_row, raw_row, end2end_row = report["models"]
    assert pt_row["weights"] == "pt" and pt_row["metrics"] is None and pt_row["ultralytics"]["mAP50"] > 0.25
    assert raw_row["metrics"]["images"] == 50 and raw_row["ultralytics"]["mAP50"] > 0.25
    assert abs(raw_row["drop"]["mAP50"]) <= 0.003 and abs(raw_row["drop"]["mAP50-95"]) <= 0.005, report
    assert code == 1 and report["gate"]["failed"] == [str(end2end)], report["gate"]
