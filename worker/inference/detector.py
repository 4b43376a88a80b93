"""The detector: snapshot (bytes or image) -> Detections + stage timings. Knows nothing of Redis.

Loaded and warmed once per process. Batch 1 always; a static batch-4 model too when draining is on.
Warm-up times both, and that measurement decides whether a partial batch (2-3 images) is padded to
4 or run one by one, and whether `batch="auto"` keeps batch 4 at all.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import openvino as ov

from worker.cameras import CameraBook, CameraSettings
from worker.constants import BATCH_MODES, DEFAULT_IOU, DEFAULT_MAX_DETECTIONS, DEFAULT_MAX_PIXELS, LETTERBOX_PAD_VALUE
from worker.inference.detections import Detections
from worker.errors import ConfigError, EmptyInputError, ImageTooLargeError, InputError
from worker.inference.imagecodec import DecodedImage, choose_reduction, decode, read_header
from worker.inference.postprocess import DetectionFilter, to_detections
from worker.inference.preprocess import BoxTransform, prepare
from worker.inference.runtime import CompileOptions, CompiledRunner, compile_model, inference_precision, load_spec, time_runner

log = logging.getLogger(__name__)

Snapshot = bytes | np.ndarray  # encoded JPEG/PNG, or an already decoded HxWx3 BGR image
DRAIN_BATCH = 4
_BATCH4_MIN_GAIN = 0.9  # "auto" keeps batch 4 only when it costs < 90% of four single runs


@dataclass
class StageTimings:
    decode: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0  # for a batch: the whole batch's inference, which every job in it waited for
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return self.decode + self.preprocess + self.infer + self.postprocess

    def as_dict(self) -> dict[str, float]:
        return {"decode": self.decode, "preprocess": self.preprocess, "infer": self.infer,
                "postprocess": self.postprocess, "total": self.total}


@dataclass
class DetectionResult:
    detections: Detections
    timings: StageTimings
    batch_size: int
    image_width: int
    image_height: int


@dataclass
class WarmupReport:
    batch1_seconds: float
    batch4_seconds: float | None
    pad_partial_from: int | None  # partial batches of at least this many run padded at batch 4


class Detector:
    def __init__(self, model: str | Path, *, options: CompileOptions | None = None, batch: str | int = 1,
                 iou: float = DEFAULT_IOU, max_detections: int = DEFAULT_MAX_DETECTIONS,
                 max_pixels: int = DEFAULT_MAX_PIXELS, reduced_decode: bool = False,
                 names: tuple[str, ...] | None = None, imgsz: int | None = None) -> None:
        batch = str(batch)
        if batch not in BATCH_MODES:
            raise ConfigError(f"batch must be one of {', '.join(BATCH_MODES)}, got {batch!r}")
        self.options = options or CompileOptions()
        self.spec, ov_model = load_spec(model, names=names, imgsz=imgsz)
        self.iou, self.max_detections, self.max_pixels = iou, max_detections, max_pixels
        self.reduced_decode = reduced_decode
        core = ov.Core()
        self.runners: dict[int, CompiledRunner] = {1: compile_model(ov_model, self.spec, 1, self.options, core)}
        if batch != "1":
            self.runners[DRAIN_BATCH] = compile_model(ov_model, self.spec, DRAIN_BATCH, self.options, core)
        self.precision = inference_precision(self.runners[1])
        self.warmup = self._warm_up(batch)
        height, width = self.spec.imgsz
        self._staging = np.full((self.max_batch, height, width, 3), LETTERBOX_PAD_VALUE, np.uint8)
        self._class_ids: dict[tuple[str, ...], tuple[int, ...]] = {}
        # A drained batch's snapshots decode and letterbox side by side (OpenCV releases the GIL): a
        # worker owning several cores would otherwise idle all but one through every decode.
        cores = len(os.sched_getaffinity(0))
        self._preparers = ThreadPoolExecutor(min(cores, DRAIN_BATCH), thread_name_prefix="deer-prepare") \
            if self.max_batch > 1 and cores > 1 else None

    # --- set-up ------------------------------------------------------------------------------
    def _warm_up(self, batch: str) -> WarmupReport:
        time_runner(self.runners[1], self.spec, 2)  # first runs allocate; do not time them
        t1 = time_runner(self.runners[1], self.spec, 5)
        if DRAIN_BATCH not in self.runners:
            return WarmupReport(t1, None, None)
        time_runner(self.runners[DRAIN_BATCH], self.spec, 1)
        t4 = time_runner(self.runners[DRAIN_BATCH], self.spec, 3)
        # A partial batch is padded to 4 only where that beats running its images one by one; a full
        # batch always runs at 4 when the user asked for 4.
        pad_from = next((n for n in (2, 3) if t4 < n * t1), DRAIN_BATCH)
        if batch == "auto" and t4 >= DRAIN_BATCH * t1 * _BATCH4_MIN_GAIN:
            log.info("batch auto: batch 4 (%.1f ms) does not beat 4 x batch 1 (%.1f ms); draining off",
                     t4 * 1e3, t1 * 1e3)
            del self.runners[DRAIN_BATCH]
            return WarmupReport(t1, t4, None)
        return WarmupReport(t1, t4, pad_from)

    @property
    def max_batch(self) -> int:
        return max(self.runners)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.names

    def class_ids(self, names: tuple[str, ...] | None) -> tuple[int, ...] | None:
        """Class names from camera settings -> model class ids; unknown names are a config error."""
        if names is None:
            return None
        if names not in self._class_ids:
            unknown = [n for n in names if n not in self.spec.names]
            if unknown:
                raise ConfigError(f"classes {unknown} are not in the model's names {list(self.spec.names)}")
            self._class_ids[names] = tuple(self.spec.names.index(n) for n in names)
        return self._class_ids[names]

    def check_cameras(self, book: CameraBook) -> None:
        for settings in [book.default, *book.cameras.values()]:
            try:
                self.class_ids(settings.classes)
            except ConfigError as exc:
                raise ConfigError(f"camera {settings.camera_id or 'default'}: {exc}") from exc

    # --- the data path -----------------------------------------------------------------------
    def _decode(self, snapshot: Snapshot, settings: CameraSettings) -> DecodedImage:
        if isinstance(snapshot, np.ndarray):
            if snapshot.ndim != 3 or snapshot.shape[2] != 3 or snapshot.dtype != np.uint8:
                raise InputError(f"decoded image must be HxWx3 uint8 BGR, got {snapshot.shape} {snapshot.dtype}")
            if snapshot.size == 0:  # 0 rows or columns: the letterbox would divide by zero
                raise EmptyInputError(f"decoded image is empty ({snapshot.shape})")
            if snapshot.shape[0] * snapshot.shape[1] > self.max_pixels:
                raise ImageTooLargeError(f"image has {snapshot.shape[1]}x{snapshot.shape[0]} pixels, "
                                         f"over the limit of {self.max_pixels}")
            return DecodedImage(snapshot, snapshot.shape[1], snapshot.shape[0])
        header = read_header(snapshot)
        reduction = 1
        if self.reduced_decode:
            crop_w, crop_h = header.width, header.height
            if settings.roi is not None:
                x0, y0, x1, y1 = settings.roi.to_pixels(header.width, header.height)
                crop_w, crop_h = x1 - x0, y1 - y0
            reduction = choose_reduction(header, crop_w, crop_h, min(self.spec.imgsz))
        return decode(snapshot, max_pixels=self.max_pixels, reduction=reduction, header=header)

    def detect(self, snapshot: Snapshot, settings: CameraSettings | None = None,
               confidence: float | None = None) -> DetectionResult:
        """One snapshot; raises a typed InputError for bad input."""
        result = self.detect_batch([(snapshot, settings)], confidence=confidence)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def detect_batch(self, items: list[tuple[Snapshot, CameraSettings | None]],
                     confidence: float | None = None) -> list[DetectionResult | InputError]:
        """Several snapshots, run through batch 4 where it pays; a bad one fails alone (returned, not raised)."""
        results: list[DetectionResult | InputError | None] = [None] * len(items)
        for start in range(0, len(items), self.max_batch):
            chunk = list(range(start, min(start + self.max_batch, len(items))))
            self._run_chunk(items, chunk, results, confidence)
        return results  # type: ignore[return-value]

    def _prepare(self, snapshot: Snapshot, settings: CameraSettings, slot: int) -> tuple[BoxTransform, StageTimings]:
        """Decode and letterbox one snapshot into its staging slot."""
        timings = StageTimings()
        t0 = time.perf_counter()
        decoded = self._decode(snapshot, settings)
        t1 = time.perf_counter()
        transform = prepare(decoded, self._staging[slot], roi=settings.roi, clahe=settings.clahe)
        timings.decode, timings.preprocess = t1 - t0, time.perf_counter() - t1
        return transform, timings

    def _run_chunk(self, items, indices, results, confidence) -> None:
        calls = [(items[index][0], items[index][1] or CameraSettings(), slot) for slot, index in enumerate(indices)]
        if self._preparers is not None and len(calls) > 1:
            futures = [self._preparers.submit(self._prepare, *call) for call in calls]
            wait(futures)  # every slot written (or failed) before anything reads the staging buffer
            outcomes = [future.result for future in futures]
        else:
            outcomes = [partial(self._prepare, *call) for call in calls]
        prepared: list[tuple[int, int, CameraSettings, BoxTransform, StageTimings]] = []
        for index, (_, settings, slot), outcome in zip(indices, calls, outcomes):
            try:
                transform, timings = outcome()
            except InputError as exc:
                results[index] = exc
                continue
            prepared.append((index, slot, settings, transform, timings))
        if not prepared:
            return
        use_batch = (DRAIN_BATCH in self.runners and self.warmup.pad_partial_from is not None
                     and len(prepared) >= self.warmup.pad_partial_from)
        outputs: list[np.ndarray] = []
        if use_batch:
            # Unused slots keep stale pixels: harmless, their outputs are ignored.
            t0 = time.perf_counter()
            batch_out = self.runners[DRAIN_BATCH].infer(self._staging)
            infer_time, batch_size = time.perf_counter() - t0, len(prepared)
            outputs = [batch_out[slot] for _, slot, *_ in prepared]
            infer_times = [infer_time] * len(prepared)
        else:
            infer_times, batch_size = [], 1
            for _, slot, *_ in prepared:
                t0 = time.perf_counter()
                outputs.append(self.runners[1].infer(self._staging[slot : slot + 1])[0])
                infer_times.append(time.perf_counter() - t0)
        for (index, _, settings, transform, timings), output, infer_time in zip(prepared, outputs, infer_times):
            t0 = time.perf_counter()
            flt = DetectionFilter(
                confidence=settings.confidence if confidence is None else confidence,
                iou=self.iou, classes=self.class_ids(settings.classes), max_detections=self.max_detections)
            detections = to_detections(output, end2end=self.spec.end2end, transform=transform, flt=flt,
                                       class_names=self.spec.names)
            timings.infer, timings.postprocess = infer_time, time.perf_counter() - t0
            results[index] = DetectionResult(detections, timings, batch_size,
                                             transform.original_width, transform.original_height)
