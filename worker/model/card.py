"""The model card: what a model says about itself, read, checked and written in this one place.

One dataclass, two homes:
  MODEL_CARD.json in an export folder: everything export measured, and the IR directory to `serve`;
  the `deer_worker:` mapping in each IR's metadata.yaml: the part a bare IR directory needs to serve the
  same without its folder (preprocessing, alert classes, confidence).
A model with neither (a plain ultralytics IR) has ModelCard(): today's defaults, nothing recorded.

Schema versions: 1 (no `schema_version` key) recorded one `deer_class` name, which nothing read; 2 records
`alert_classes`, the class names whose detection sets a result's `deer_detected`. A version 1 card reads
as `alert_classes: [deer_class]`. Every error is one line naming the file and the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ModelLoadError
from worker.inference.preprocess import Preprocessing

SCHEMA_VERSION = 2
CARD_FILE = "MODEL_CARD.json"
IR_METADATA_KEY = "deer_worker"  # the mapping in an IR's metadata.yaml
DEFAULT_ALERT_CLASS = "deer"  # matched case-insensitively when the card names no alert classes


@dataclass(frozen=True)
class ModelCard:
    name: str = ""
    version: str = ""
    serve: str = ""  # MODEL_CARD.json: the IR directory (inside the folder) the worker serves
    serve_reason: str = ""
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    imgsz: int | None = None
    preprocessing: Preprocessing | None = None  # None: the model records none (cameras decide)
    data_preprocessed: bool = False  # export's calibration data was CLAHE-processed already
    alert_classes: tuple[str, ...] | None = None  # None: the default rule (resolve_alert_classes)
    confidence: float | None = None  # the model's default threshold
    iou: float | None = None  # the NMS IoU the raw head is served with
    data: str | None = None
    val_split: str | None = None
    gate: dict | None = None
    irs: dict = field(default_factory=dict)  # IR directory name -> what export measured of it
    reference: dict | None = None  # the .pt's own scores
    wall_s: float | None = None
    schema_version: int = SCHEMA_VERSION

    # --- reading --------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ModelCard:
        """A card from its JSON (or a `deer_worker:` mapping), checked; `where` starts every error."""
        if not isinstance(raw, dict):
            raise ModelLoadError(f"{where}: expected a mapping of keys")
        version = raw.get("schema_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ModelLoadError(f"{where}: schema_version {version!r} is not one this worker reads "
                                 f"(1-{SCHEMA_VERSION}); upgrade deer-worker")
        preprocessing, data_preprocessed = _preprocessing(raw.get("preprocessing", raw), where)
        if version == 1:
            deer_class = raw.get("deer_class")
            alert_classes = None if deer_class is None else (str(deer_class),)
        else:
            alert_classes = _alert_classes(raw.get("alert_classes"), where)
        imgsz = raw.get("imgsz")
        if imgsz is not None and (isinstance(imgsz, bool) or not isinstance(imgsz, int) or imgsz <= 0):
            raise ModelLoadError(f"{where}: imgsz: expected a positive integer, got {imgsz!r}")
        serve = raw.get("serve", "")
        if not isinstance(serve, str):
            raise ModelLoadError(f"{where}: serve: expected the name of an IR directory, got {serve!r}")
        irs = raw.get("irs") or {}
        if not isinstance(irs, dict):
            raise ModelLoadError(f"{where}: irs: expected a mapping of IR directory -> facts")
        return cls(
            name=str(raw.get("name") or ""), version=str(raw.get("version") or ""), serve=serve,
            serve_reason=str(raw.get("serve_reason") or ""), checkpoint=_optional_str(raw.get("checkpoint")),
            checkpoint_sha256=_optional_str(raw.get("checkpoint_sha256")), imgsz=imgsz,
            preprocessing=preprocessing, data_preprocessed=data_preprocessed, alert_classes=alert_classes,
            confidence=_probability(raw.get("confidence"), "confidence", where),
            iou=_probability(raw.get("iou"), "iou", where),
            data=_optional_str(raw.get("data")), val_split=_optional_str(raw.get("val_split")),
            gate=raw.get("gate"), irs=irs, reference=raw.get("reference"), wall_s=raw.get("wall_s"),
            schema_version=SCHEMA_VERSION)

    @classmethod
    def read(cls, folder: str | Path) -> ModelCard:
        """An export folder's MODEL_CARD.json; it must name the IR to serve."""
        path = Path(folder) / CARD_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: not a readable JSON model card ({exc})") from exc
        card = cls.from_dict(raw, str(path))
        if not card.serve:
            raise ModelLoadError(f"{path}: needs \"serve\": the IR directory (inside the folder) to serve")
        return card

    @classmethod
    def from_ir_metadata(cls, meta: dict, where: str) -> ModelCard:
        """The `deer_worker:` mapping of an IR's metadata.yaml (already parsed); none: the defaults."""
        raw = meta.get(IR_METADATA_KEY)
        return cls() if raw is None else cls.from_dict(raw, f"{where}: {IR_METADATA_KEY}")

    # --- writing --------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """MODEL_CARD.json's content, keys in the order a reader meets them."""
        return {"schema_version": self.schema_version, "name": self.name, "version": self.version,
                "serve": self.serve, "serve_reason": self.serve_reason, "checkpoint": self.checkpoint,
                "checkpoint_sha256": self.checkpoint_sha256, "imgsz": self.imgsz,
                "preprocessing": self._preprocessing_dict(), "alert_classes": self._alert_list(),
                "confidence": self.confidence, "iou": self.iou, "data": self.data, "val_split": self.val_split,
                "gate": self.gate, "irs": self.irs, "reference": self.reference, "wall_s": self.wall_s}

    def ir_metadata(self) -> dict[str, Any]:
        """The `deer_worker:` mapping for an IR's metadata.yaml: what a bare IR directory needs."""
        return {"schema_version": self.schema_version, "preprocessing": self._preprocessing_dict(),
                "alert_classes": self._alert_list(), "confidence": self.confidence}

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def _preprocessing_dict(self) -> dict[str, Any] | None:
        if self.preprocessing is None:
            return None
        p = self.preprocessing
        return {"clahe": p.clahe, "clahe_clip": p.clahe_clip if p.clahe else None,
                "clahe_tiles": list(p.clahe_tiles), "data_preprocessed": self.data_preprocessed}

    def _alert_list(self) -> list[str] | None:
        return None if self.alert_classes is None else list(self.alert_classes)


def has_card(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and (folder / CARD_FILE).exists()


def resolve_alert_classes(wanted: tuple[str, ...] | None, names: tuple[str, ...]) -> tuple[str, ...]:
    """The model's own spellings of the classes that raise the alarm (`deer_detected`), decided once per model:
    named (case-insensitive), each must be one of the model's; unnamed: the class called deer (any case),
    else a one-class model's only class, else none (a multi-class model without deer alerts on nothing:
    name its alert classes). Raises ValueError naming the model's classes."""
    by_folded = {n.casefold(): n for n in names}
    if wanted is None:
        deer = by_folded.get(DEFAULT_ALERT_CLASS)
        return (deer,) if deer else tuple(names) if len(names) == 1 else ()
    missing = [w for w in wanted if w.casefold() not in by_folded]
    if missing:
        raise ValueError(f"alert class{'es' if len(missing) > 1 else ''} {missing} not among the model's classes "
                         f"{list(names)}")
    return tuple(dict.fromkeys(by_folded[w.casefold()] for w in wanted))


def no_alert_warning(alert_classes: tuple[str, ...], names: tuple[str, ...]) -> str | None:
    """What to log at load when nothing the model finds can raise the alarm; None when something can."""
    if alert_classes:
        return None
    shown = ", ".join(names[:8]) + ("..." if len(names) > 8 else "")
    return (f"no alert class: none of the model's classes ({shown}) is named deer, so deer_detected stays "
            "false; export with --deer-class NAME to choose them")


# --- checks, one line each ------------------------------------------------------------------------------
def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _probability(value: Any, key: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ModelLoadError(f"{where}: {key}: expected a number in (0, 1], got {value!r}")
    return float(value)


def _alert_classes(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ModelLoadError(f"{where}: alert_classes: expected a list of class names, got {value!r}")
    return tuple(value)


def _preprocessing(raw: Any, where: str) -> tuple[Preprocessing | None, bool]:
    """(preprocessing, data_preprocessed) of the card's `preprocessing` (a flat `deer_worker:` mapping too)."""
    if raw is None:
        return None, False
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{where}: preprocessing: expected a mapping")
    if "clahe" not in raw:
        return None, bool(raw.get("data_preprocessed", False))
    clahe, clip, tiles = raw["clahe"], raw.get("clahe_clip"), raw.get("clahe_tiles")
    if not isinstance(clahe, bool):
        raise ModelLoadError(f"{where}: clahe: expected true or false, got {clahe!r}")
    if clahe and clip is None:
        # the user's data was made with clip 3.0 while their detector used 2.0: never assume one
        raise ModelLoadError(f"{where}: clahe is on but clahe_clip is not recorded; re-export with --clahe-clip")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float))
                             or not math.isfinite(clip) or clip <= 0):
        raise ModelLoadError(f"{where}: clahe_clip: expected a number > 0, got {clip!r}")
    if tiles is not None and (not isinstance(tiles, list) or len(tiles) != 2
                              or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tiles)):
        raise ModelLoadError(f"{where}: clahe_tiles: expected [columns, rows] > 0, got {tiles!r}")
    defaults = Preprocessing()
    return (Preprocessing(clahe, float(clip) if clip is not None else defaults.clahe_clip,
                          tuple(tiles) if tiles else defaults.clahe_tiles),
            bool(raw.get("data_preprocessed", False)))
