"""Warm-up's batch-1/batch-4 times remembered beside the compiled-model cache (issue 17, cold start): a
start with a filled cache runs each compiled model once and decides on the first start's measurement."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from dynamic_models import dynamic_raw_model  # noqa: F401 - fixture
from worker.inference import batch_timing, detector as detector_module
from worker.inference.detector import DRAIN_BATCH, Detector
from worker.inference.runtime import CompileOptions

SHAPE = (192, 320)  # 16:9 at the demo's imgsz 320


@pytest.fixture
def runs(monkeypatch):
    """Every warm-up inference the detector asks for: (input shape, batch, repeats) per time_runner call."""
    calls = []
    real = detector_module.time_runner

    def counted(runner, spec, repeats):
        calls.append((runner.shape, runner.batch, repeats))
        return real(runner, spec, repeats)

    monkeypatch.setattr(detector_module, "time_runner", counted)
    return calls


def _detector(model, cache, batch="auto"):
    return Detector(model, batch=batch, shapes=["16x9"], options=CompileOptions(cache_dir=str(cache)))


def test_round_trip_and_what_is_not_remembered(tmp_path, caplog):
    assert batch_timing.recall(str(tmp_path), "k") is None and batch_timing.recall(None, "k") is None
    batch_timing.remember(str(tmp_path), "k", 0.012, 0.031)
    batch_timing.remember(str(tmp_path), "one", 0.012, None)
    assert batch_timing.recall(str(tmp_path), "k") == {"batch1_seconds": 0.012, "batch4_seconds": 0.031}
    assert batch_timing.recall(str(tmp_path), "one") == {"batch1_seconds": 0.012, "batch4_seconds": None}
    for bad in ("{", json.dumps({"batch1_seconds": -1.0, "batch4_seconds": None}), json.dumps({"batch1": 0.1})):
        (tmp_path / batch_timing.FOLDER / "bad.json").write_text(bad)
        assert batch_timing.recall(str(tmp_path), "bad") is None  # measured again, and overwritten
    assert "ignoring remembered warm-up times" in caplog.text
    blocked = tmp_path / "file"
    blocked.write_text("")
    batch_timing.remember(str(blocked), "k", 0.1, 0.2)  # not a directory: warned, not raised
    assert "not remembered" in caplog.text


def test_the_key_follows_what_the_times_depend_on():
    options = CompileOptions()
    key = batch_timing.timing_key("d" * 64, SHAPE, options, "cpu")
    assert key == batch_timing.timing_key("d" * 64, SHAPE, CompileOptions(), "cpu")
    others = [batch_timing.timing_key("e" * 64, SHAPE, options, "cpu"),
              batch_timing.timing_key("d" * 64, (256, 320), options, "cpu"),
              batch_timing.timing_key("d" * 64, SHAPE, replace(options, precision="bf16"), "cpu"),
              batch_timing.timing_key("d" * 64, SHAPE, replace(options, threads=1), "cpu"),
              batch_timing.timing_key("d" * 64, SHAPE, options, "another cpu")]
    assert len({key, *others}) == 6


def test_a_second_start_reuses_the_measured_times_and_runs_each_model_once(dynamic_raw_model, tmp_path, runs):
    first = _detector(dynamic_raw_model, tmp_path, batch="4")
    measured = first.warmups[SHAPE]
    assert not measured.remembered and first.startup.timing > 0 and first.startup.warm_runs == 0
    assert (SHAPE, 1, 5) in runs and (SHAPE, DRAIN_BATCH, 3) in runs  # measured: 5 and 3 timed runs
    runs.clear()
    second = _detector(dynamic_raw_model, tmp_path, batch="4")
    again = second.warmups[SHAPE]
    assert again.remembered and second.startup.timing == 0 and second.startup.warm_runs > 0
    assert (again.batch1_seconds, again.batch4_seconds, again.pad_partial_from) == \
        (measured.batch1_seconds, measured.batch4_seconds, measured.pad_partial_from)
    assert sorted(r for r in runs if r[0] == SHAPE) == [(SHAPE, 1, 1), (SHAPE, DRAIN_BATCH, 1)]
    assert second.startup.from_cache == second.startup.compiled == 2  # the compiled-model cache was filled too
    # another cache dir (or an emptied one) measures again
    runs.clear()
    assert not _detector(dynamic_raw_model, tmp_path / "other", batch="4").warmups[SHAPE].remembered


@pytest.mark.parametrize("batch4_over_batch1", [4.0, 2.5])
def test_auto_decides_on_the_remembered_times_and_skips_a_batch4_it_turns_down(dynamic_raw_model, tmp_path,
                                                                               batch4_over_batch1):
    first = _detector(dynamic_raw_model, tmp_path, batch="1")  # measures batch 1 only: auto measures again
    assert not _detector(dynamic_raw_model, tmp_path).warmups[SHAPE].remembered
    key = first._timing_key(SHAPE)
    batch_timing.remember(str(tmp_path), key, 0.010, 0.010 * batch4_over_batch1)
    detector = _detector(dynamic_raw_model, tmp_path)
    warmup = detector.warmups[SHAPE]
    assert warmup.remembered and warmup.batch4_seconds == pytest.approx(0.010 * batch4_over_batch1)
    if batch4_over_batch1 >= DRAIN_BATCH * 0.9:  # no gain: draining off, batch 4 not even compiled
        assert warmup.pad_partial_from is None and detector.max_batch == 1
        assert (SHAPE, DRAIN_BATCH) not in detector.runners and detector.startup.compiled == 1
    else:  # 2.5 x batch 1: a full batch pays, and a partial one of 3 (not of 2)
        assert warmup.pad_partial_from == 3 and detector.max_batch == DRAIN_BATCH
        assert (SHAPE, DRAIN_BATCH) in detector.runners and detector.startup.compiled == 2
