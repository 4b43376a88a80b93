"""The model card (worker/model/card.py): one dataclass for MODEL_CARD.json and an IR's `deer_worker:` mapping,
read, written and checked in one place; the alert classes resolved against the model's names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from worker.errors import ModelLoadError
from worker.inference.preprocess import Preprocessing
from worker.inference.runtime import load_spec
from worker.model.card import (CARD_FILE, SCHEMA_VERSION, ModelCard, has_card, no_alert_warning,
                               resolve_alert_classes)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "demo"
PLAIN_IR = DEMO / "deer-yolo26n_int8_openvino_model"  # no deer_worker mapping: a plain ultralytics IR


def test_the_shipped_demo_card_reads_as_its_json_says():
    raw = json.loads((DEMO / CARD_FILE).read_text())
    card = ModelCard.read(DEMO)
    assert (card.name, card.version, card.serve, card.imgsz) == (raw["name"], raw["version"], raw["serve"], raw["imgsz"])
    assert card.preprocessing == Preprocessing(False, 2.0, (8, 8)) and card.data_preprocessed is False
    assert (card.confidence, card.iou) == (0.25, 0.65) and card.irs == raw["irs"] and card.reference == raw["reference"]
    assert card.alert_classes == ("deer",)  # schema 1's deer_class, read as the one alert class


def test_write_then_read_is_the_same_card_and_the_ir_mapping_is_its_subset(tmp_path):
    card = ModelCard(name="m", version="v1", serve="ir", imgsz=320, preprocessing=Preprocessing(True, 3.0, (4, 4)),
                     data_preprocessed=True, alert_classes=("Deer", "elk"), confidence=0.3, iou=0.6,
                     irs={"ir": {"head": "raw"}}, gate={"max_drop_map50": 0.003})
    card.write(tmp_path)
    written = json.loads((tmp_path / CARD_FILE).read_text())
    assert written["schema_version"] == SCHEMA_VERSION and written["alert_classes"] == ["Deer", "elk"]
    assert "deer_class" not in written
    assert ModelCard.read(tmp_path) == card
    mapping = card.ir_metadata()
    assert mapping == {"schema_version": SCHEMA_VERSION, "alert_classes": ["Deer", "elk"], "confidence": 0.3,
                       "preprocessing": {"clahe": True, "clahe_clip": 3.0, "clahe_tiles": [4, 4],
                                         "data_preprocessed": True}}
    back = ModelCard.from_ir_metadata({"deer_worker": mapping}, "metadata.yaml")
    assert (back.preprocessing, back.alert_classes, back.confidence) == (card.preprocessing, card.alert_classes, 0.3)


def test_a_plain_ultralytics_ir_has_the_default_card_and_still_loads():
    assert ModelCard.from_ir_metadata({"names": {0: "deer"}}, "metadata.yaml") == ModelCard()
    spec, _ = load_spec(PLAIN_IR)
    assert spec.card is None and spec.preprocessing is None and spec.confidence is None
    assert spec.alert_classes == ("deer",) and not has_card(PLAIN_IR)


@pytest.mark.parametrize("raw, message", [
    ({"schema_version": 3}, "schema_version 3 is not one this worker reads"),
    ({"schema_version": "2"}, "schema_version '2'"),
    ({"alert_classes": "deer"}, "alert_classes: expected a list of class names"),
    ({"alert_classes": ["deer", ""]}, "alert_classes: expected a list"),
    ({"confidence": 1.5}, "confidence: expected a number in (0, 1]"),
    ({"iou": True}, "iou: expected a number in (0, 1]"),
    ({"preprocessing": {"clahe": True}}, "clahe is on but clahe_clip is not recorded"),
    ({"preprocessing": {"clahe": "yes"}}, "clahe: expected true or false"),
    ({"preprocessing": {"clahe": False, "clahe_tiles": [8]}}, "clahe_tiles: expected [columns, rows]"),
    ({"preprocessing": [1]}, "preprocessing: expected a mapping"),
    ({"imgsz": -1}, "imgsz: expected a positive integer"),
    ([1, 2], "expected a mapping of keys"),
])
def test_a_bad_card_is_one_line_naming_the_file_and_the_key(raw, message):
    if isinstance(raw, dict):
        raw = {"schema_version": SCHEMA_VERSION, **raw}
    with pytest.raises(ModelLoadError) as caught:
        ModelCard.from_dict(raw, "x/MODEL_CARD.json")
    assert message in str(caught.value) and str(caught.value).startswith("x/MODEL_CARD.json: ")
    assert "\n" not in str(caught.value)


def test_a_card_that_names_no_ir_to_serve_is_refused(tmp_path):
    (tmp_path / CARD_FILE).write_text(json.dumps({"schema_version": 2, "name": "m"}))
    with pytest.raises(ModelLoadError, match="needs \"serve\""):
        ModelCard.read(tmp_path)
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a readable JSON model card"):
        ModelCard.read(tmp_path)


@pytest.mark.parametrize("wanted, names, resolved", [
    (None, ("deer",), ("deer",)),
    (None, ("Deer", "person"), ("Deer",)),  # the default matches any case, in the model's spelling
    (None, ("blob",), ("blob",)),  # a one-class model alerts on its class
    (None, ("person", "dog"), ()),  # never "any detection counts": nothing, and a warning at load
    (("ELK", "deer"), ("deer", "elk", "person"), ("elk", "deer")),
    (("white-tailed deer",), ("white-tailed deer", "person"), ("white-tailed deer",)),
    ((), ("person", "dog"), ()),
])
def test_alert_classes_resolve_once_against_the_model_names(wanted, names, resolved):
    assert resolve_alert_classes(wanted, names) == resolved
    assert (no_alert_warning(resolved, names) is None) == bool(resolved)


def test_an_alert_class_the_model_lacks_names_the_model_classes():
    with pytest.raises(ValueError, match=r"alert class \['deer'\] not among the model's classes \['blob'\]"):
        resolve_alert_classes(("deer",), ("blob",))


def _renamed_ir(tmp_path: Path, names: dict, deer_worker: dict | None) -> Path:
    ir = tmp_path / "ir"
    shutil.copytree(PLAIN_IR, ir)
    meta = yaml.safe_load((ir / "metadata.yaml").read_text())
    meta["names"] = names
    if deer_worker is not None:
        meta["deer_worker"] = deer_worker
    (ir / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return ir


def test_load_resolves_the_alert_classes_and_refuses_one_the_model_lacks(tmp_path, caplog):
    blob = _renamed_ir(tmp_path, {0: "blob"}, None)
    assert load_spec(blob)[0].alert_classes == ("blob",)
    shutil.rmtree(blob)
    old = _renamed_ir(tmp_path, {0: "blob"}, {"deer_class": "deer"})  # what export wrote for a blob model before
    with pytest.raises(ModelLoadError, match=r"deer_worker: alert class \['deer'\] not among the model's classes \['blob'\]"):
        load_spec(old)
    shutil.rmtree(old)
    person = _renamed_ir(tmp_path, {0: "person"}, {"schema_version": 2, "alert_classes": []})
    with caplog.at_level("WARNING"):
        assert load_spec(person)[0].alert_classes == ()
    assert "no alert class" in caplog.text
