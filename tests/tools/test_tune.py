"""deer-worker tune: the choice, with injected measurements (what a host measured is data here), the
worker.yaml fragment the worker must accept, and one short real run on the demo IRs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FP32_MODEL
from worker.config import load_config
from worker.errors import MissingFileError
from worker.tools import tune
from worker.tools.tune import Candidate, Measurement

FP32, INT8 = "models/demo/deer-yolo26n_openvino_model", "models/demo/deer-yolo26n_int8_openvino_model"


def row(name: str, p95: float, images_per_s: float, drop: float, *, model: str = FP32, workers: int = 1,
        threads: int = 2, batch: int = 1, reduced: bool = False) -> tuple[Candidate, Measurement]:
    weights = "int8" if "int8" in name else "fp32"
    return (Candidate(model, name, weights, "f32", threads, workers, batch, reduced),
            Measurement(p95 * 0.8, p95, images_per_s, 1.0 - drop, drop))


# A host of the kind: the FP32 model is lossless but slow, INT8 loses 3 points and is fast,
# a smaller input (512) is lossless and in between.
HOST = [
    row("fp32-640", p95=80.0, images_per_s=13.0, drop=0.0),
    row("fp32-640", p95=120.0, images_per_s=16.0, drop=0.0, workers=2, threads=1),
    row("fp32-640", p95=39.0, images_per_s=20.0, drop=0.0, reduced=True),  # lossless too: a tie with 512
    row("fp32-512", p95=38.0, images_per_s=27.0, drop=0.002),
    row("fp32-512", p95=39.5, images_per_s=40.0, drop=0.002, batch=4),
    row("int8-640", p95=30.0, images_per_s=35.0, drop=0.03, model=INT8),
    row("int8-640", p95=55.0, images_per_s=48.0, drop=0.03, model=INT8, workers=2, threads=1),
]


def test_candidates_split_the_cores_between_workers():
    assert tune.worker_splits(2) == [(1, 1), (1, 2), (2, 1)]
    assert all(w * t <= 4 for w, t in tune.worker_splits(4))
    models = [{"model": FP32, "name": "a", "weights": "fp32"}, {"model": INT8, "name": "b", "weights": "int8",
                                                                "dynamic": True}]
    found = tune.candidates(models, 2, shapes=("square", "rect"))
    # 3 splits x batch 1/4 x decode on/off; rect only for the dynamic model
    assert sum(c.name == "a" for c in found) == 12 and sum(c.name == "b" for c in found) == 24
    assert {c.shape for c in found if c.name == "a"} == {"square"}


def test_lossless_by_default_picks_the_best_throughput_within_the_gate():
    choice = tune.choose(HOST, budget_ms=40.0)
    # INT8 is faster but outside the gate; of the lossless rows under 40 ms (drops within the noise
    # tie), 512 at batch 4 has the most images/s
    assert choice.pick is not None
    assert (choice.pick.candidate.name, choice.pick.candidate.batch) == ("fp32-512", 4)
    assert not next(r for r in choice.rows if r.candidate.name == "int8-640").eligible
    assert choice.loss_buys is None and choice.nearest == []


def test_max_drop_allows_a_stated_loss_and_says_what_it_buys():
    choice = tune.choose(HOST, budget_ms=32.0, max_drop=0.03)
    assert choice.pick.candidate.name == "int8-640" and choice.pick.measurement.p95_ms == 30.0
    buys = choice.loss_buys
    # against the fastest lossless row (fp32-512 at 38 ms, which misses 32 ms)
    assert buys["lossless_p95_ms"] == 38.0 and not buys["lossless_meets_budget"]
    assert buys["p95_speedup"] == pytest.approx(38.0 / 30.0)
    assert buys["throughput_gain"] == pytest.approx(35.0 / 27.0)
    # and lossless is still preferred when both meet the budget, even against more images/s (INT8 on two
    # workers, 48/s at 55 ms): accuracy first, then throughput
    assert tune.choose(HOST, budget_ms=56.0, max_drop=0.03).pick.candidate.name == "fp32-512"


def test_impossible_budget_says_none_meets_it_and_names_the_nearest():
    choice = tune.choose(HOST, budget_ms=10.0)
    assert choice.pick is None and tune.config_fragment(choice) == ""
    nearest = [n["label"] for n in choice.nearest]
    assert len(nearest) == tune.NEAREST
    assert nearest[0].startswith("fp32-512") and "b1" in nearest[0]  # the 38 ms row, 28 ms over
    assert choice.nearest[0]["over_budget_ms"] == pytest.approx(28.0)
    assert "int8" not in " ".join(nearest)  # outside the gate: not offered as lossless
    lines = tune.summary(choice)
    assert lines[0].startswith("none meets the budget of 10 ms")


def test_a_lossy_row_that_meets_the_budget_is_named_with_its_drop():
    choice = tune.choose(HOST, budget_ms=31.0)
    assert choice.pick is None
    lossy = [n for n in choice.nearest if n["over_budget_ms"] == 0.0]
    assert lossy and lossy[0]["label"].startswith("int8-640") and "--max-drop 0.030" in lossy[0]["cost"]


def test_headroom_is_the_load_sustained_against_the_load_asked():
    choice = tune.choose(HOST, budget_ms=40.0, cameras=20, interval=2.0)
    h = choice.headroom
    assert h["asked_images_per_s"] == 10.0 and h["sustained_images_per_s"] == 40.0
    assert h["ratio"] == 4.0 and h["cameras_sustained"] == 80 and h["enough"]
    assert not tune.headroom(5.0, 20, 2.0)["enough"]
    assert tune.headroom(5.0, None, None) is None


def test_config_fragment_is_accepted_by_the_worker(tmp_path):
    choice = tune.choose(HOST, budget_ms=40.0, cameras=4, interval=1.0)
    path = tmp_path / "worker.yaml"
    path.write_text(tune.config_fragment(choice, host="test host"))
    config = load_config(path, env={})
    pick = choice.pick.candidate
    assert (config.model, config.threads, config.workers, config.reduced_decode) == (
        pick.model, pick.threads, pick.workers, pick.reduced_decode)
    assert config.batch == "auto" and config.precision == "f32"
    text = path.read_text()
    assert "p95 39.5 ms" in text and "headroom" in text  # commented with what was measured


def test_rect_fragment_warms_the_snapshots_aspect_ratios(tmp_path):
    rect = [(Candidate(FP32, "rect", "fp32", "f32", 2, 1, 1, False, "rect"), Measurement(10.0, 12.0, 50.0, 1.0, 0.0))]
    shapes = tune.snapshot_shapes([(1920, 1080), (640, 360), (640, 480)])
    assert shapes == ["16x9", "4x3"]
    path = tmp_path / "worker.yaml"
    path.write_text(tune.config_fragment(tune.choose(rect, 40.0), shapes=shapes))
    assert load_config(path, env={}).shapes == ["16x9", "4x3"]


def bf16_row(p95: float, images_per_s: float, drop: float, *, verified: bool, drop_map: float | None = None):
    return (Candidate(FP32, "fp32-640", "fp32", "bf16", 2, 1, 1, False),
            Measurement(p95 * 0.8, p95, images_per_s, 1.0 - drop, drop, drop_map=drop_map, verified=verified))


def test_bf16_is_offered_only_where_the_cpu_has_it():
    haswell = {"fpu", "sse4_2", "avx", "avx2", "fma"}
    assert tune.precisions_for(haswell) == ("f32",)
    assert tune.precisions_for(haswell | {"avx512f", "avx512_vnni"}) == ("f32",)  # VNNI is not bf16
    assert tune.precisions_for(haswell | {"avx512_bf16"}) == ("f32", "bf16")
    assert tune.precisions_for(haswell | {"amx_bf16"}) == ("f32", "bf16")
    models = [{"model": FP32, "name": "a", "weights": "fp32"}]
    found = tune.candidates(models, 2, precisions=tune.precisions_for(haswell))
    assert {c.precision for c in found} == {"f32"}


def test_bf16_is_lossy_until_labels_show_it_within_the_gate():
    f32 = row("fp32-640", p95=50.0, images_per_s=20.0, drop=0.0)
    # agreement 1.0 on the snapshots, but no labels checked it: not lossless
    unchecked = bf16_row(30.0, 33.0, 0.0, verified=False)
    choice = tune.choose([f32, unchecked], budget_ms=40.0)
    assert choice.pick is None and not choice.rows[1].eligible
    assert "accuracy not checked on labels" in choice.nearest[-1]["cost"]
    assert "unchecked" in tune.table(choice)
    # a stated loss allows it (agreement within it)
    assert tune.choose([f32, unchecked], budget_ms=40.0, max_drop=0.01).pick.candidate.precision == "bf16"
    # --data showed it within validate's gate: lossless, and faster
    checked = bf16_row(30.0, 33.0, 0.002, verified=True, drop_map=0.001)
    choice = tune.choose([f32, checked], budget_ms=60.0, tolerance=tune.GATE_MAP50)
    assert choice.pick.candidate.precision == "bf16" and choice.loss_buys is None
    # outside the gate on mAP50, or on mAP50-95 alone: not lossless
    for drop, drop_map in ((0.004, 0.0), (0.0, 0.006)):
        lossy = bf16_row(30.0, 33.0, drop, verified=True, drop_map=drop_map)
        assert tune.choose([f32, lossy], budget_ms=60.0, tolerance=tune.GATE_MAP50).pick.candidate.precision == "f32"
    lines = tune.summary(tune.choose([f32, checked], budget_ms=60.0, tolerance=tune.GATE_MAP50))
    assert any(line.startswith("bf16 (apart)") and "within the gate" in line for line in lines)


def test_bf16_rows_are_reported_apart():
    rows = [row("fp32-640", p95=50.0, images_per_s=20.0, drop=0.0), bf16_row(30.0, 33.0, 0.0, verified=False)]
    lines = tune.table(tune.choose(rows, budget_ms=60.0)).splitlines()
    # the faster bf16 row comes after the f32 one, under its own heading
    assert "f32" in lines[2] and lines[3].startswith("-- bf16") and "bf16" in lines[4]


@pytest.mark.skipif(not tune.bf16_native(), reason="this CPU has no native bf16 (avx512_bf16 / amx_bf16)")
def test_a_bf16_candidate_really_computes_in_bf16():
    snapshot = open("models/demo/samples/day_640x360_deer.jpg", "rb").read()
    run = tune.measure_in_process(str(FP32_MODEL), 1, False, [snapshot], 0.05, False, "bf16")
    assert run.precision == "bf16"
    assert tune.measure_in_process(str(FP32_MODEL), 1, False, [snapshot], 0.05, False, "f32").precision == "f32"


def test_labelled_accuracy_is_against_the_pt_as_validate_gates_it():
    """With an export's card the reference is the .pt's ultralytics val score, and each IR's own (f32)."""
    card = {"reference": {"mAP50": 0.83, "mAP50-95": 0.60}, "imgsz": 320, "val_split": "val",
            "accuracy": {"mAP50": 0.818, "mAP50-95": 0.597}}
    accuracy = tune.LabelledAccuracy("models/demo/heldout.yaml", {str(FP32_MODEL): card})
    map50, drop, drop_map = accuracy({"model": str(FP32_MODEL)}, False, "f32")
    assert (map50, drop, drop_map) == (0.818, pytest.approx(0.012), pytest.approx(0.003))
    measurement = Measurement(1.0, 1.0, 1.0, map50, drop, drop_map=drop_map)
    assert not tune.is_eligible(measurement, 0.0, tune.GATE_MAP50)  # 1.2 points: outside validate's gate
    assert tune.is_eligible(measurement, 0.01, tune.GATE_MAP50)


def test_weights_reuse_a_finished_export(tmp_path):
    """A second run with the same .pt and data finds export's folder and card, and exports nothing."""
    import hashlib

    pt = tmp_path / "model.pt"
    pt.write_bytes(b"not a checkpoint: exporting it would fail")
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()[:12]
    folder = tmp_path / "cache" / f"model-{digest}" / "320-nodata"
    folder.mkdir(parents=True)
    (folder / "MODEL_CARD.json").write_text(json.dumps({
        "imgsz": 320, "reference": None, "val_split": None, "serve": "m_dynamic_raw_fp32_openvino_model",
        "irs": {"m_dynamic_raw_fp32_openvino_model": {"head": "raw", "weights": "fp32", "dynamic": True},
                "m_dynamic_end2end_fp32_openvino_model": {"head": "end2end", "weights": "fp32", "dynamic": True}}}))
    models, scores = tune.exported_models(pt, [320], None, tmp_path / "cache", log=lambda _: None)
    assert [Path(m).name for m in models] == ["m_dynamic_raw_fp32_openvino_model",
                                             "m_dynamic_end2end_fp32_openvino_model"]
    assert all(s["imgsz"] == 320 and s["accuracy"] is None for s in scores.values())
    with pytest.raises(MissingFileError, match="data yaml .* not found"):
        tune.exported_models(pt, [320], str(tmp_path / "no.yaml"), tmp_path / "cache", log=lambda _: None)


def test_real_run_on_the_demo_irs_picks_a_config_the_worker_loads(tmp_path, capsys):
    """The whole command on the shipped IRs, short: the figures come from the real Detector and queue."""
    import argparse

    parser = argparse.ArgumentParser()
    tune.add_arguments(parser)
    out, fragment = tmp_path / "tune.json", tmp_path / "fragment.yaml"
    args = parser.parse_args(["models/demo/samples/day_640x360_deer.jpg", "models/demo/samples/night_640x360_deer.jpg",
                              "--model", str(FP32_MODEL), "--batch", "1", "--max-workers", "1",
                              "--budget-ms", "10000", "--seconds", "0.3", "--no-bf16",
                              "--out", str(out), "--write-config", str(fragment)])
    assert tune.run(args) == 0
    report = json.loads(out.read_text())
    pick = report["pick"]
    assert pick["through_queue"] and pick["p95_ms"] > 0 and pick["images_per_s"] > 0
    # the FP32 reference agrees with itself; a reduced decode cannot apply to 640x360 snapshots
    # (1 worker at 1 and at 2 threads, batch 1), and the reference agrees with itself
    assert sorted((r["workers"], r["threads"], r["batch"]) for r in report["rows"]) == [(1, 1, 1), (1, 2, 1)]
    assert all(r["drop"] == 0.0 and r["accuracy"] == 1.0 and r["precision"] == "f32" for r in report["rows"])
    assert any("reduced decode" in s for s in report["skipped"])
    # what the run cost: no export without --weights, the candidates measured (its rows) and their time
    assert report["export_s"] is None and report["candidates"] == len(report["rows"]) and report["measure_s"] > 0
    assert report["host"].startswith("host: ")
    assert load_config(fragment, env={}).model == pick["model"]
    assert "PICK" in capsys.readouterr().out
