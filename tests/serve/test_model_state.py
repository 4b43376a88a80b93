"""ModelSwitcher against the real Redis with stand-in detectors (the real two-worker reload is
test_reload.py, -m slow): the stored model wins at start, a switch waits for the run of batches in
hand, a model that fails to load is not switched to, and each case is answered."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import TEST_REDIS_URL
from worker.config import WorkerConfig
from worker.serve.model_state import ModelSwitcher, answers, read_desired, set_desired


def fake_build(path: Path):
    if "broken" in path.name:
        raise RuntimeError(f"cannot read {path.name}")
    return SimpleNamespace(spec=SimpleNamespace(name=path.name, version=f"v-{path.name}"), class_names=("deer",))


def make_switcher(redis_conn, tmp_path, name="w0", built=None):
    config = WorkerConfig(redis_url=TEST_REDIS_URL, model=str(tmp_path / "config_model"), models_dir=str(tmp_path))
    for model in ("config_model", "new_model", "broken_model"):
        (tmp_path / model).mkdir(exist_ok=True)
    switched = [] if built is None else built
    switcher = ModelSwitcher(lambda: redis_conn, config, name, build=fake_build,
                             on_switch=lambda detector: switched.append(detector.spec.name))
    return switcher, switched


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_start_serves_the_stored_model_and_falls_back_to_the_config_if_it_does_not_load(redis_conn, tmp_path):
    desired = set_desired(redis_conn, "new_model")  # a name under models_dir
    switcher, switched = make_switcher(redis_conn, tmp_path)
    try:
        assert switcher.start().spec.name == "new_model" and switched == ["new_model"]
        assert answers(redis_conn, desired.generation)["w0"]["status"] == "switched"
    finally:
        switcher.stop()
    broken = set_desired(redis_conn, "broken_model")
    assert broken.previous == "new_model"
    restarted, _ = make_switcher(redis_conn, tmp_path, name="w1")
    try:
        assert restarted.start().spec.name == "config_model"
        answer = answers(redis_conn, broken.generation)["w1"]
        assert answer["status"] == "failed" and "cannot read broken_model" in answer["reason"]
    finally:
        restarted.stop()


@pytest.fixture
def serving_worker(redis_conn, tmp_path):
    """A started switcher on the config's model, attached to a stand-in consumer -> (switcher, worker, switched)."""
    switcher, switched = make_switcher(redis_conn, tmp_path)
    worker = SimpleNamespace(detector=None)
    switcher.start()
    switcher.attach(worker)
    yield switcher, worker, switched
    switcher.stop()


def test_a_switch_waits_for_the_batches_in_hand_and_old_model_jobs_stay_served(redis_conn, serving_worker):
    switcher, worker, switched = serving_worker
    with switcher.serving(worker):
        desired = set_desired(redis_conn, "new_model")
        assert wait_for(lambda: switcher.pending), "the new model was never loaded"
        time.sleep(0.2)
        assert worker.detector.spec.name == "config_model"  # not inside a run of batches
        assert "w0" not in answers(redis_conn, desired.generation)  # answered only when swapped in
    assert worker.detector.spec.name == "new_model" and not switcher.pending
    assert switched == ["config_model", "new_model"]
    assert set(switcher.served_names) == {"new_model", "config_model"}
    answer = answers(redis_conn, desired.generation)["w0"]
    assert answer == {"status": "switched", "model": "new_model", "version": "v-new_model", "reason": "",
                      "at": answer["at"]}
    # idle: the next change is swapped in at once, without waiting for a job
    back = set_desired(redis_conn, "config_model")
    assert wait_for(lambda: worker.detector.spec.name == "config_model")
    assert answers(redis_conn, back.generation)["w0"]["status"] == "switched"


def test_a_model_that_fails_to_load_is_not_switched_to(redis_conn, serving_worker):
    switcher, worker, switched = serving_worker
    desired = set_desired(redis_conn, "broken_model")
    assert wait_for(lambda: "w0" in answers(redis_conn, desired.generation))
    answer = answers(redis_conn, desired.generation)["w0"]
    assert answer["status"] == "failed" and "cannot read broken_model" in answer["reason"]
    assert worker.detector.spec.name == "config_model" and switched == ["config_model"]
    assert not switcher.pending and read_desired(redis_conn).model == "broken_model"
