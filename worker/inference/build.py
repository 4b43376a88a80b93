"""How a process that runs inference is set up: once-per-process tuning, and the detector from the config.

Every caller builds its detector here (the worker, `detect`, `doctor`, `validate`, `bench`), so a
setting such as cache_dir cannot be honoured by one and forgotten by another.
"""

from __future__ import annotations

from pathlib import Path

from worker.config import WorkerConfig
from worker.constants import DEFAULT_MAX_DETECTIONS
from worker.inference.detector import Detector
from worker.inference.imagecodec import reuse_freed_frame_memory
from worker.inference.runtime import CompileOptions


def tune_process() -> None:
    """Process-wide settings for serving snapshots; call once, at start-up, from an entry point.

    Changes the whole process (glibc's malloc thresholds, see imagecodec.reuse_freed_frame_memory),
    so it is the entry point's decision, not a side effect of building a detector.
    """
    reuse_freed_frame_memory()


def compile_options(config: WorkerConfig) -> CompileOptions:
    return CompileOptions(threads=config.threads, pin_threads=config.pin_threads, precision=config.precision,
                          cache_dir=str(Path(config.cache_dir).expanduser()))


def build_detector(config: WorkerConfig, *, model: str | Path | None = None, batch: str | None = None,
                   iou: float | None = None, max_detections: int = DEFAULT_MAX_DETECTIONS) -> Detector:
    """The detector `config` describes; keyword arguments replace one setting for this caller only
    (a tool that loads several models, always batch 1, or ultralytics val's NMS settings). config.iou 0:
    the model card's NMS IoU, else DEFAULT_IOU."""
    return Detector(config.resolve(str(model or config.model)), batch=batch or config.batch,
                    iou=(config.iou or None) if iou is None else iou, max_pixels=config.max_pixels,
                    reduced_decode=config.reduced_decode, max_detections=max_detections,
                    options=compile_options(config), shapes=config.shapes)
