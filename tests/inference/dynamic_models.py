"""Dynamic-shape demo IRs for the rect tests (import the fixtures into a test module): the shipped
ones where models/demo has them (dynamic export, issue 13), else exported once per session from the
demo checkpoint (needs the export extra)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import DEMO
from worker.errors import ModelLoadError
from worker.inference.runtime import load_spec

CHECKPOINT = DEMO / "deer-yolo26n.pt"


def shipped_dynamic(end2end: bool) -> Path | None:
    """The first dynamic FP32 IR of that head in models/demo (hidden folders are exports in progress)."""
    for folder in sorted(p for p in DEMO.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            spec, _ = load_spec(folder)
        except ModelLoadError:
            continue
        if spec.dynamic and spec.end2end == end2end and spec.weights == "fp32":
            return spec.xml.parent
    return None


def export_dynamic(tmp_root: Path, end2end: bool) -> Path:
    try:
        os.environ["YOLO_OFFLINE"] = "1"
        from ultralytics import YOLO
    except ImportError:
        pytest.skip("no dynamic demo IR in models/demo and no export extra to make one")
    work = tmp_root / ("end2end" if end2end else "raw")
    work.mkdir()
    shutil.copy(CHECKPOINT, work / CHECKPOINT.name)
    kwargs = {"nms": False} if end2end else {}  # nms unset keeps the raw (one-to-many) head
    return Path(YOLO(str(work / CHECKPOINT.name)).export(format="openvino", dynamic=True, imgsz=320, **kwargs))


@pytest.fixture(scope="session")
def dynamic_end2end_model(tmp_path_factory) -> Path:
    return shipped_dynamic(True) or export_dynamic(tmp_path_factory.mktemp("dynamic"), True)


@pytest.fixture(scope="session")
def dynamic_raw_model(tmp_path_factory) -> Path:
    return shipped_dynamic(False) or export_dynamic(tmp_path_factory.mktemp("dynamic"), False)
