import pytest
import yaml

from worker.cameras import UNKNOWN_CAMERA_LABEL, load_camera_book, parse_camera_book
from worker.config import resolve_path
from worker.errors import ConfigError


def test_shipped_zones_file_is_valid():
    book = load_camera_book(resolve_path("configs/zones.yaml"))
    backyard = book.get("10cea9e4511f")
    assert backyard.label == "backyard" and backyard.roi is not None and backyard.roi.normalized


def test_unknown_camera_gets_default_and_bounded_label():
    book = parse_camera_book({"default": {"clahe": True, "confidence": 0.4}, "cameras": {"a": {"clahe": False}}})
    other = book.get("zzz")
    assert other.clahe and other.confidence == 0.4 and other.label == UNKNOWN_CAMERA_LABEL
    known = book.get("a")
    assert not known.clahe and known.confidence == 0.4 and known.label == "a"
    assert book.labels == ["a", UNKNOWN_CAMERA_LABEL]


@pytest.mark.parametrize("data, key", [
    ({"cameras": {"cam1": {"roi": {"x": 0, "y": 0, "widht": 5, "height": 5}}}}, "cameras.cam1.roi.widht"),
    ({"cameras": {"cam1": {"confidence": 1.5}}}, "cameras.cam1.confidence"),
    ({"cameras": {"cam1": {"clahe": "yes"}}}, "cameras.cam1.clahe"),
    ({"default": {"classes": "deer"}}, "default.classes"),
    ({"cameras": {"cam1": {"roi": {"x": 0.5, "y": 0, "width": 0.6, "height": 1, "normalized": True}}}},
     "cameras.cam1.roi"),
    ({"camera": {}}, "camera"),
])
def test_bad_settings_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_camera_book(data)


def test_numeric_camera_ids_become_strings(tmp_path):
    path = tmp_path / "zones.yaml"
    path.write_text(yaml.safe_dump({"cameras": {123456: {"name": "gate"}}}))
    assert load_camera_book(path).get("123456").label == "gate"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_camera_book(tmp_path / "nope.yaml")
