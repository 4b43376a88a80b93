"""Per-camera settings from configs/zones.yaml: ROI, CLAHE, threshold, class filter, enabled.

CLAHE (on/off, clip, tiles) and the threshold left unset (None) follow the model (its MODEL_CARD.json
or metadata `deer_worker:`): `with_model_defaults` fills them per job and `check_against_model`
refuses, at load, a camera that contradicts what the model was trained with unless it sets
`force_preprocessing: true`.

Unknown cameras get the `default` block. Every key is checked on load and a bad one is named by its
full path (e.g. `cameras.10cea9e4511f.roi.width`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from worker.config import read_yaml
from worker.constants import DEFAULT_CONFIDENCE
from worker.errors import ConfigError
from worker.inference.preprocess import Preprocessing, Roi
from worker.zones import DEFAULT_ZONE_RULE, ZONE_RULES, Zone

UNKNOWN_CAMERA_LABEL = "other"  # metric label for cameras not in the file, so label sets stay bounded
_SETTING_KEYS = {"name", "enabled", "clahe", "clahe_clip", "clahe_tiles", "force_preprocessing", "confidence",
                 "classes", "roi", "zones", "zone_rule", "require_zone"}
_ROI_KEYS = {"x", "y", "width", "height", "normalized"}


@dataclass(frozen=True)
class CameraSettings:
    camera_id: str = ""
    label: str = UNKNOWN_CAMERA_LABEL  # what metrics call this camera
    enabled: bool = True
    clahe: bool | None = None  # None: as the model was trained (off for a model that records nothing)
    clahe_clip: float | None = None  # None: the model's
    clahe_tiles: tuple[int, int] | None = None  # None: the model's
    force_preprocessing: bool = False  # serve with CLAHE settings that contradict the model's
    confidence: float | None = None  # None: the model's default confidence, else DEFAULT_CONFIDENCE
    classes: tuple[str, ...] | None = None  # class names to keep; None keeps all
    roi: Roi | None = None
    zones: tuple[Zone, ...] = ()  # named include/ignore zones (worker/zones.py)
    zone_rule: str = DEFAULT_ZONE_RULE  # which point of a box places it: bottom_center | center
    require_zone: bool = False  # deer_detected only for a deer inside an include zone


@dataclass(frozen=True)
class CameraBook:
    default: CameraSettings
    cameras: dict[str, CameraSettings]

    def get(self, camera_id: str) -> CameraSettings:
        known = self.cameras.get(camera_id)
        return known if known is not None else replace(self.default, camera_id=camera_id)

    @property
    def labels(self) -> list[str]:
        return sorted({s.label for s in self.cameras.values()} | {UNKNOWN_CAMERA_LABEL})


def _check_keys(block: dict, allowed: set[str], where: str) -> None:
    for key in block:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _parse_roi(raw: Any, where: str) -> Roi | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with x, y, width, height")
    _check_keys(raw, _ROI_KEYS, where)
    values = {}
    for key in ("x", "y", "width", "height"):
        # .nan/.inf are YAML floats: at job time they fail the whole batch (ValueError), not as RoiError
        values[key] = _number(raw.get(key), f"{where}.{key}")
    normalized = raw.get("normalized", False)
    if not isinstance(normalized, bool):
        raise ConfigError(f"{where}.normalized: expected true or false")
    if values["width"] <= 0 or values["height"] <= 0 or values["x"] < 0 or values["y"] < 0:
        raise ConfigError(f"{where}: x and y must be >= 0, width and height > 0")
    if normalized and (values["x"] + values["width"] > 1.0 + 1e-9 or values["y"] + values["height"] > 1.0 + 1e-9):
        raise ConfigError(f"{where}: a normalized ROI must lie within 0..1")
    return Roi(normalized=normalized, **values)


def _parse_zone(name: str, raw: Any, where: str) -> Zone:
    """{rect: {x, y, width, height}} or {polygon: [[x, y], ...]}, optional normalized and ignore."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with rect or polygon")
    _check_keys(raw, {"rect", "polygon", "normalized", "ignore"}, where)
    for key in ("normalized", "ignore"):
        if not isinstance(raw.get(key, False), bool):
            raise ConfigError(f"{where}.{key}: expected true or false")
    if ("rect" in raw) == ("polygon" in raw):
        raise ConfigError(f"{where}: give exactly one of rect or polygon")
    if "rect" in raw:
        rect = raw["rect"]
        if not isinstance(rect, dict) or set(rect) != {"x", "y", "width", "height"}:
            raise ConfigError(f"{where}.rect: expected a mapping with x, y, width, height")
        x, y, w, h = (_number(rect[k], f"{where}.rect.{k}") for k in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise ConfigError(f"{where}.rect: width and height must be > 0")
        points = ((x, y), (x + w, y), (x + w, y + h), (x, y + h))
    else:
        polygon = raw["polygon"]
        if not isinstance(polygon, list) or len(polygon) < 3 or \
                not all(isinstance(p, list) and len(p) == 2 for p in polygon):
            raise ConfigError(f"{where}.polygon: expected at least 3 [x, y] points")
        points = tuple((_number(p[0], f"{where}.polygon[{i}]"), _number(p[1], f"{where}.polygon[{i}]"))
                       for i, p in enumerate(polygon))
    normalized = raw.get("normalized", False)
    if normalized and not all(-1e-9 <= v <= 1.0 + 1e-9 for point in points for v in point):
        raise ConfigError(f"{where}: a normalized zone must lie within 0..1")
    return Zone(name, points, normalized=normalized, ignore=raw.get("ignore", False))


def _parse_zones(raw: Any, where: str) -> tuple[Zone, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of zone name -> zone")
    return tuple(_parse_zone(str(name), zone, f"{where}.{name}") for name, zone in raw.items())


def _parse_settings(raw: Any, where: str, base: CameraSettings, camera_id: str) -> CameraSettings:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _check_keys(raw, _SETTING_KEYS, where)
    settings = replace(base, camera_id=camera_id)
    if "name" in raw:
        if not isinstance(raw["name"], str) or not raw["name"]:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        settings = replace(settings, label=raw["name"])
    for key in ("enabled", "clahe", "force_preprocessing"):
        if key in raw:
            follows_model = key == "clahe" and raw[key] is None  # null: as the model was trained
            if not isinstance(raw[key], bool) and not follows_model:
                raise ConfigError(f"{where}.{key}: expected true or false, got {raw[key]!r}")
            settings = replace(settings, **{key: raw[key]})
    if "confidence" in raw:
        value = raw["confidence"]  # null: the model's
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.0 <= value <= 1.0):
            raise ConfigError(f"{where}.confidence: expected a number in 0..1 or null, got {value!r}")
        settings = replace(settings, confidence=None if value is None else float(value))
    if "clahe_clip" in raw:
        value = None if raw["clahe_clip"] is None else _number(raw["clahe_clip"], f"{where}.clahe_clip")
        if value is not None and value <= 0:
            raise ConfigError(f"{where}.clahe_clip: expected a number > 0, got {value}")
        settings = replace(settings, clahe_clip=value)
    if "clahe_tiles" in raw:
        value = raw["clahe_tiles"]
        if value is not None and (not isinstance(value, list) or len(value) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)):
            raise ConfigError(f"{where}.clahe_tiles: expected [columns, rows] of whole numbers > 0, got {value!r}")
        settings = replace(settings, clahe_tiles=tuple(value) if value is not None else None)
    if "classes" in raw:
        value = raw["classes"]
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where}.classes: expected a list of class names or null")
        settings = replace(settings, classes=tuple(value) if value is not None else None)
    if "roi" in raw:
        settings = replace(settings, roi=_parse_roi(raw["roi"], f"{where}.roi"))
    if "zones" in raw:
        settings = replace(settings, zones=_parse_zones(raw["zones"], f"{where}.zones"))
    if "zone_rule" in raw:
        if raw["zone_rule"] not in ZONE_RULES:
            raise ConfigError(f"{where}.zone_rule: expected one of {', '.join(ZONE_RULES)}, got {raw['zone_rule']!r}")
        settings = replace(settings, zone_rule=raw["zone_rule"])
    if "require_zone" in raw:
        if not isinstance(raw["require_zone"], bool):
            raise ConfigError(f"{where}.require_zone: expected true or false, got {raw['require_zone']!r}")
        settings = replace(settings, require_zone=raw["require_zone"])
    if settings.require_zone and not any(not zone.ignore for zone in settings.zones):
        raise ConfigError(f"{where}.require_zone: needs at least one include zone (a zone without ignore: true)")
    return settings


def with_model_defaults(settings: CameraSettings, model: Preprocessing | None,
                        model_confidence: float | None) -> CameraSettings:
    """`settings` with every unset (None) preprocessing key and the threshold taken from the model."""
    model = model or Preprocessing()
    return replace(
        settings,
        clahe=model.clahe if settings.clahe is None else settings.clahe,
        clahe_clip=model.clahe_clip if settings.clahe_clip is None else settings.clahe_clip,
        clahe_tiles=model.clahe_tiles if settings.clahe_tiles is None else settings.clahe_tiles,
        confidence=settings.confidence if settings.confidence is not None
        else model_confidence if model_confidence is not None else DEFAULT_CONFIDENCE,
    )


def preprocessing_of(settings: CameraSettings) -> Preprocessing:
    """The preprocessing of settings already completed by with_model_defaults."""
    return Preprocessing(bool(settings.clahe), float(settings.clahe_clip), tuple(settings.clahe_tiles))


def check_against_model(settings: CameraSettings, model: Preprocessing | None) -> None:
    """A ConfigError when a camera's CLAHE settings contradict the model's, unless it forces them."""
    if model is None or settings.force_preprocessing:
        return
    clashes = preprocessing_clashes(settings, model)
    if clashes:
        raise ConfigError(f"{', '.join(clashes)} contradicts what the model was trained with; remove the "
                          f"setting to follow the model, or set force_preprocessing: true to serve it anyway")


def preprocessing_clashes(settings: CameraSettings, model: Preprocessing) -> list[str]:
    """The CLAHE settings (clahe, clahe_clip, clahe_tiles) that `settings` sets to other than the model's."""
    clashes = []
    if settings.clahe is not None and settings.clahe != model.clahe:
        clashes.append(f"clahe {str(settings.clahe).lower()} (the model: {str(model.clahe).lower()})")
    if model.clahe and settings.clahe is not False:
        if settings.clahe_clip is not None and settings.clahe_clip != model.clahe_clip:
            clashes.append(f"clahe_clip {settings.clahe_clip} (the model: {model.clahe_clip})")
        if settings.clahe_tiles is not None and tuple(settings.clahe_tiles) != tuple(model.clahe_tiles):
            clashes.append(f"clahe_tiles {list(settings.clahe_tiles)} (the model: {list(model.clahe_tiles)})")
    return clashes


def override_settings(base: CameraSettings, raw: Any, where: str) -> CameraSettings:
    """`base` with a per-request override applied (a job's "camera": the keys of a camera entry,
    partial allowed). The metric label stays the configured camera's, so requests cannot grow label sets."""
    return replace(_parse_settings(raw, where, base, base.camera_id), label=base.label)


def parse_camera_book(data: Any, source: str = "zones.yaml") -> CameraBook:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'default' and 'cameras'")
    _check_keys(data, {"default", "cameras"}, source)
    default = _parse_settings(data.get("default"), f"{source}: default", CameraSettings(), "")
    cameras_raw = data.get("cameras") or {}
    if not isinstance(cameras_raw, dict):
        raise ConfigError(f"{source}: cameras: expected a mapping of camera id -> settings")
    cameras = {}
    for camera_id, raw in cameras_raw.items():
        camera_id = str(camera_id)
        settings = _parse_settings(raw, f"{source}: cameras.{camera_id}", default, camera_id)
        if "name" not in (raw or {}):
            settings = replace(settings, label=camera_id)
        cameras[camera_id] = settings
    return CameraBook(default, cameras)


def load_camera_book(path: str | Path | None) -> CameraBook:
    if path is None:
        return parse_camera_book({})
    path = Path(path)
    return parse_camera_book(read_yaml(path, "camera settings file"), str(path))
