import pytest
import yaml

from worker.cameras import _SETTING_KEYS, UNKNOWN_CAMERA_LABEL, load_camera_book, parse_camera_book
from worker.config import resolve_path
from worker.errors import ConfigError


SHIPPED_ZONES = ["configs/zones.yaml", "models/demo/zones.yaml"]


@pytest.mark.parametrize("name", SHIPPED_ZONES)
def test_shipped_zones_file_documents_every_setting_and_parses_as_written(name):
    """Each shipped zones file: its `default` block names every per-camera setting (it is their
    documentation), and every camera comes out as its YAML says, the rest inherited from `default`."""
    path = resolve_path(name)
    raw = yaml.safe_load(path.read_text())
    book = load_camera_book(path)
    if name == "configs/zones.yaml":  # the production file documents every setting; the demo's one only its own
        assert set(raw["default"]) == _SETTING_KEYS - {"name"}
    for key, value in raw["default"].items():
        assert getattr(book.default, key) == (tuple(value) if isinstance(value, (list, dict)) else value), key
    labels = [s.label for s in book.cameras.values()]
    assert len(labels) == len(set(labels)) and UNKNOWN_CAMERA_LABEL not in labels  # one metric series each
    for camera_id, block in (raw.get("cameras") or {}).items():
        settings = book.get(str(camera_id))
        assert settings.label == block.get("name", str(camera_id))
        for key in ("enabled", "clahe", "confidence"):
            assert getattr(settings, key) == block.get(key, getattr(book.default, key)), (camera_id, key)
        if "classes" in block:
            assert settings.classes == (tuple(block["classes"]) if block["classes"] is not None else None)
        roi = block.get("roi", "inherited")
        if roi == "inherited" or roi is None:
            assert settings.roi == (book.default.roi if roi == "inherited" else None)
        else:
            assert (settings.roi.x, settings.roi.y, settings.roi.width, settings.roi.height, settings.roi.normalized) \
                == (roi["x"], roi["y"], roi["width"], roi["height"], roi.get("normalized", False)), camera_id


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
