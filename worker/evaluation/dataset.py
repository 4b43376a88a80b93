"""Labelled datasets as ultralytics reads them: a data yaml (root, splits, class names), the images of a
split, and YOLO-format label files (`class cx cy w h` per line, normalised) as pixel boxes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worker.config import read_yaml, resolve_path
from worker.errors import ConfigError
from worker.evaluation.metrics import GroundTruth

# Same list as ultralytics.data.utils.IMG_FORMATS, so both tools see the same files (the detector then
# refuses what is not JPEG or PNG, and validate reports it).
IMAGE_SUFFIXES = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff",
                            "webp", "pfm"})



# --- the dataset yaml -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """An ultralytics data yaml: dataset root, split entries and class names."""

    yaml: Path
    root: Path
    names: tuple[str, ...]
    splits: dict[str, list[str]] = field(default_factory=dict)

    def images(self, split: str) -> list[Path]:
        if not self.splits.get(split):
            raise ConfigError(f"{self.yaml}: no '{split}' split (has: {', '.join(sorted(self.splits)) or 'none'})")
        images: list[Path] = []
        for entry in self.splits[split]:
            path = Path(entry).expanduser()
            images += list_images(path if path.is_absolute() else self.root / path)
        return images


def _dataset_root(yaml_path: Path, raw: object) -> Path:
    """`path:` taken relative to the yaml's directory first, then the cwd, then the project root.

    ultralytics resolves a relative `path` against the cwd only (then its datasets dir), so yamls
    written for it (like models/demo/heldout.yaml, repo-root relative) still work here from any cwd.
    """
    if raw in (None, ""):
        return yaml_path.parent
    path = Path(str(raw)).expanduser()
    if path.is_absolute():
        return path
    for candidate in (yaml_path.parent / path, Path.cwd() / path, resolve_path(path)):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"{yaml_path}: path: {raw} not found next to the yaml, in the cwd or in the project root")


def load_data_yaml(path: str | Path) -> DataSpec:
    yaml_path = resolve_path(path)
    data = read_yaml(yaml_path, "data yaml")
    if not isinstance(data, dict):
        raise ConfigError(f"{yaml_path}: expected a mapping (path, train, val, names)")
    raw_names = data.get("names")
    if isinstance(raw_names, dict):
        names = tuple(str(raw_names[k]) for k in sorted(raw_names, key=int))
    elif isinstance(raw_names, list):
        names = tuple(str(n) for n in raw_names)
    elif isinstance(data.get("nc"), int):
        names = tuple(f"class_{i}" for i in range(data["nc"]))
    else:
        raise ConfigError(f"{yaml_path}: names: expected a list or an id -> name mapping (or nc)")
    if isinstance(data.get("nc"), int) and data["nc"] != len(names):
        raise ConfigError(f"{yaml_path}: nc: {data['nc']} but {len(names)} names")
    splits = {}
    for split in ("train", "val", "test", "minival"):
        entry = data.get(split)
        if entry:
            splits[split] = [str(e) for e in entry] if isinstance(entry, list) else [str(entry)]
    return DataSpec(yaml_path, _dataset_root(yaml_path, data.get("path")), names, splits)


# --- YOLO-format datasets -------------------------------------------------------------------------
def list_images(source: str | Path) -> list[Path]:
    """Image files of a split: a directory (searched recursively) or a .txt list, sorted as ultralytics does."""
    source = Path(source)
    if source.is_dir():
        files = [str(p) for p in source.rglob("*.*") if p.is_file()]
    elif source.is_file() and source.suffix == ".txt":
        parent = str(source.parent) + os.sep
        lines = [x.strip() for x in source.read_text().splitlines() if x.strip()]
        files = [parent + x[2:] if x.startswith("./") else x for x in lines]  # "./" is relative to the list
    else:
        raise ConfigError(f"{source}: image directory or list file not found")
    images = sorted(f for f in files if f.rpartition(".")[-1].lower() in IMAGE_SUFFIXES)
    if not images:
        raise ConfigError(f"{source}: no images found")
    return [Path(f) for f in images]


def label_path(image: str | Path) -> Path:
    """.../images/x.jpg -> .../labels/x.txt (the last `images` directory is swapped, as ultralytics does)."""
    text = str(image)
    images_dir, labels_dir = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(labels_dir.join(text.rsplit(images_dir, 1)).rsplit(".", 1)[0] + ".txt")


def read_labels(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """A label file -> (M, 5) float32 rows of class, cx, cy, w, h (normalised). Missing file = no boxes.

    Checked like ultralytics' verify_image_label (5 columns, coordinates <= 1.01, integer classes in
    range), and exact duplicate rows dropped the same way, so both tools count the same instances.
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    try:
        rows = [line.split() for line in path.read_text(encoding="utf-8-sig").strip().splitlines() if line.strip()]
        labels = np.array(rows, dtype=np.float32)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a YOLO label file ({exc})") from None
    if not len(labels):
        return np.zeros((0, 5), np.float32)
    if labels.ndim != 2 or labels.shape[1] != 5:
        raise ConfigError(f"{path}: every line must be 'class cx cy w h' (5 columns); segments are not supported")
    if labels[:, 1:].max() > 1.01 or labels[:, 1:].min() < -0.01 or labels[:, 3:].min() < 0:
        raise ConfigError(f"{path}: coordinates must be normalised to 0..1")
    if (labels[:, 0] % 1 != 0).any() or labels[:, 0].min() < 0:
        raise ConfigError(f"{path}: class ids must be non-negative integers")
    if num_classes is not None and labels[:, 0].max() >= num_classes:
        raise ConfigError(f"{path}: class {int(labels[:, 0].max())} is out of range for {num_classes} classes")
    _, unique = np.unique(labels, axis=0, return_index=True)
    return labels[unique] if len(unique) < len(labels) else labels


def labels_to_truth(labels: np.ndarray, width: int, height: int) -> GroundTruth:
    """(M, 5) normalised class, cx, cy, w, h -> pixel xyxy boxes for an image of width x height."""
    if not len(labels):
        return GroundTruth.empty()
    cx, cy, w, h = (labels[:, i].astype(np.float64) for i in range(1, 5))
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
    return GroundTruth(boxes.astype(np.float32), labels[:, 0].astype(np.int32))


def load_truth(image: str | Path, width: int, height: int, num_classes: int | None = None) -> GroundTruth:
    """Ground truth of one dataset image from its label file, in that image's pixels."""
    return labels_to_truth(read_labels(label_path(image), num_classes), width, height)
