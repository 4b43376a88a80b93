"""The detector: snapshot (bytes or image) -> Detections + stage timings. Knows nothing of Redis.

Loaded and warmed once per process. Each snapshot runs at the input shape ultralytics PyTorch
`predict` gives it (preprocess.input_shape: 384x640 for 16:9 at 640): a dynamic-shape IR is reshaped
and compiled once per (shape, batch) it meets, the configured `shapes` at start so no live snapshot
waits for a compile. A static IR serves square, as exported. Batch 1 always; batch 4 too when
draining is on. Warm-up times both per shape, and that decides whether a partial batch (2-3 images)
of that shape is padded to 4 or run one by one, and whether `batch="auto"` keeps batch 4 at all. The
times are remembered beside the compiled-model cache (batch_timing): a start with a filled cache loads
each compiled model, runs it once and decides on the times measured at the first start.

The data path is two steps so a caller can prepare batch N+1 on a thread while batch N infers:
`prepare_batch` (decode, preprocess, letterbox into tensors the PreparedBatch owns, grouped by
shape) and `run_prepared` (inference and postprocess). `detect_batch` is the two in a row.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import openvino as ov

from worker.cameras import CameraBook, CameraSettings, check_against_model, preprocessing_of, with_model_defaults
from worker.config import DEFAULT_SHAPES, parse_shape
from worker.constants import BATCH_MODES, DEFAULT_IOU, DEFAULT_MAX_DETECTIONS, DEFAULT_MAX_PIXELS
from worker.inference import batch_timing
from worker.inference.detections import Detections
from worker.errors import ConfigError, EmptyInputError, ImageTooLargeError, InputError
from worker.inference.imagecodec import DecodedImage, choose_reduction, decode, read_header
from worker.inference.postprocess import DetectionFilter, to_detections
from worker.inference.preprocess import BoxTransform, input_shape, prepare, prepare_rect
from worker.inference.runtime import (CompileOptions, CompiledRunner, ConcurrentRunner, compile_concurrent, compile_model,
                                      inference_precision, load_spec, time_runner)

log = logging.getLogger(__name__)

Snapshot = bytes | np.ndarray  # encoded JPEG/PNG, or an already decoded HxWx3 BGR image
DRAIN_BATCH = 4
CONCURRENT_STREAMS = 2  # a drained batch of 3-4 runs as two half batches side by side (ConcurrentRunner)
_BATCH4_MIN_GAIN = 0.9  # "auto" keeps batch 4 only when it costs < 90% of four single runs


def _batch4_pays(batch1_seconds: float, batch4_seconds: float) -> bool:
    """Whether batch "auto" keeps batch 4 at a shape: it costs < _BATCH4_MIN_GAIN of four single runs."""
    return batch4_seconds < DRAIN_BATCH * batch1_seconds * _BATCH4_MIN_GAIN


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
    shape: tuple[int, int] = (0, 0)  # (H, W) of the input this was measured at
    remembered: bool = False  # the times come from batch_timing (measured at an earlier start), not this one


@dataclass
class StartupTimes:
    """Where building the detector went, in seconds (the worker's start-up log, benchmarks/cold_start.py)."""

    load: float = 0.0  # reading and checking the IR
    compile: float = 0.0  # compiling (or loading from the compiled-model cache) each warmed (shape, batch)
    compiled: int = 0
    from_cache: int = 0  # of those, loaded from the compiled-model cache
    warm_runs: float = 0.0  # one inference per compiled model, where the batch times were remembered
    timing: float = 0.0  # measuring batch 1 and batch 4 (11 inferences per shape), where they were not
    total: float = 0.0  # the whole construction, these and anything else (e.g. concurrent runners)

    def as_dict(self) -> dict[str, float | int]:
        return {key: round(value, 3) if isinstance(value, float) else value for key, value in vars(self).items()}


@dataclass
class PreparedItem:
    index: int  # position in the caller's items
    tensor: np.ndarray  # (H, W, 3) uint8, owned by this item
    transform: BoxTransform
    settings: CameraSettings  # completed with the model's defaults and the batch's confidence
    timings: StageTimings


@dataclass
class PreparedBatch:
    """Decoded and letterboxed inputs, grouped by input shape; bad items keep their InputError."""

    size: int
    groups: dict[tuple[int, int], list[PreparedItem]] = field(default_factory=dict)
    errors: dict[int, InputError] = field(default_factory=dict)


class Detector:
    def __init__(self, model: str | Path, *, options: CompileOptions | None = None, batch: str | int = 1,
                 iou: float | None = None, max_detections: int = DEFAULT_MAX_DETECTIONS,
                 max_pixels: int = DEFAULT_MAX_PIXELS, reduced_decode: bool = False,
                 names: tuple[str, ...] | None = None, imgsz: int | None = None,
                 shapes: Iterable[str] = DEFAULT_SHAPES, rect: bool = True, concurrent: bool = True) -> None:
        """`rect=False` serves a dynamic model square (imgsz x imgsz) as a static one would: for
        measuring what rect inputs gain (benchmarks/rect_speed.py, square vs rect accuracy).
        `concurrent=False` runs every drained batch through the one-stream batch-4 model (the tests
        compare the two paths)."""
        batch = str(batch)
        if batch not in BATCH_MODES:
            raise ConfigError(f"batch must be one of {', '.join(BATCH_MODES)}, got {batch!r}")
        self.options = options or CompileOptions()
        started = time.perf_counter()
        self.startup = StartupTimes()
        self.spec, self._model = load_spec(model, names=names, imgsz=imgsz)
        self.startup.load = time.perf_counter() - started
        # NMS IoU (raw head): the caller's, else the model card's, else DEFAULT_IOU (the user's 0.65)
        self.iou = iou if iou is not None else self.spec.iou if self.spec.iou is not None else DEFAULT_IOU
        self.max_detections, self.max_pixels = max_detections, max_pixels
        self.reduced_decode = reduced_decode
        self.imgsz = max(self.spec.imgsz)  # the long side every snapshot is scaled to
        self.rect = rect and self.spec.dynamic
        if not self.spec.dynamic:
            log.warning("%s has a static %dx%d input: every snapshot runs square. Re-export it with dynamic "
                        "shapes (deer-worker export) to serve each at its own shape, which is faster",
                        self.spec.xml, self.spec.imgsz[1], self.spec.imgsz[0])
        self._core = ov.Core()
        self._digest: str | None = None  # of the IR's bytes, for batch_timing's key (read once, if a cache is set)
        self._compile_lock = threading.Lock()
        self.runners: dict[tuple[tuple[int, int], int], CompiledRunner] = {}
        self.concurrent: dict[tuple[int, int], ConcurrentRunner] = {}  # per warmed shape, see _warm_concurrent
        self._drain = batch != "1"
        self.warmups: dict[tuple[int, int], WarmupReport] = {}
        self.warmup_done = False
        self.warm_shapes = self._warm_shapes(shapes)
        for shape in self.warm_shapes:
            self.warmups[shape] = self._warm_up(shape, batch)
        if concurrent:
            self._warm_concurrent()
        self.warmup_done = True
        self.startup.total = time.perf_counter() - started
        self.warmup = self.warmups[self.warm_shapes[0]]  # the first configured shape's, for the start-up log
        self.precision = inference_precision(next(iter(self.runners.values())))
        self._class_ids: dict[tuple[str, ...], tuple[int, ...]] = {}
        # A drained batch's snapshots decode and letterbox side by side (OpenCV releases the GIL): a
        # worker owning several cores would otherwise idle all but one through every decode.
        cores = len(os.sched_getaffinity(0))
        self._preparers = ThreadPoolExecutor(min(cores, DRAIN_BATCH), thread_name_prefix="deer-prepare") \
            if self.max_batch > 1 and cores > 1 else None

    # --- set-up ------------------------------------------------------------------------------
    def _warm_shapes(self, shapes: Iterable[str]) -> list[tuple[int, int]]:
        """Input shapes (H, W) for the configured aspect ratios; a static model has only its own."""
        if not self.rect:
            return [self.spec.imgsz]
        found: list[tuple[int, int]] = []
        for text in shapes:
            width, height = parse_shape(text)
            shape = input_shape(height, width, self.imgsz)
            if shape not in found:
                found.append(shape)
        return found or [input_shape(self.imgsz, self.imgsz, self.imgsz)]

    def input_shape_for(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the input a height x width image (after any ROI crop) runs at."""
        return input_shape(height, width, self.imgsz) if self.rect else self.spec.imgsz

    def _runner(self, shape: tuple[int, int], batch: int) -> CompiledRunner:
        runner = self.runners.get((shape, batch))
        if runner is None:
            with self._compile_lock:
                runner = self.runners.get((shape, batch))
                if runner is None:
                    if self.warmup_done:
                        log.info("compiling input shape %dx%d (not in shapes:) while a snapshot waits", *shape[::-1])
                    runner = compile_model(self._model, self.spec, batch, self.options, self._core, shape)
                    self.runners[(shape, batch)] = runner
        return runner

    def _compile_for_start(self, shape: tuple[int, int], batch: int) -> CompiledRunner:
        started = time.perf_counter()
        runner = self._runner(shape, batch)
        self.startup.compile += time.perf_counter() - started
        self.startup.compiled += 1
        try:
            self.startup.from_cache += bool(runner.compiled.get_property("LOADED_FROM_CACHE"))
        except RuntimeError:  # a plugin without the property: counted as compiled
            pass
        return runner

    def _timing_key(self, shape: tuple[int, int]) -> str | None:
        if not self.options.cache_dir:
            return None
        if self._digest is None:
            self._digest = batch_timing.model_digest(self.spec.xml)
        return batch_timing.timing_key(self._digest, shape, self.options,
                                       self._core.get_property("CPU", "FULL_DEVICE_NAME"))

    def _warm_up(self, shape: tuple[int, int], batch: str) -> WarmupReport:
        """Compile (shape, 1) and, when draining, (shape, 4), and take their times: measured here, or
        remembered from an earlier start with the same model, shape, CPU and settings (batch_timing). With
        remembered times each compiled model runs once (the first run allocates), and a batch 4 that
        "auto" turns down is not compiled at all."""
        key = self._timing_key(shape)
        times = batch_timing.recall(self.options.cache_dir, key) if key else None
        remembered = times is not None and (not self._drain or times["batch4_seconds"] is not None)
        if remembered:
            t1, t4 = times["batch1_seconds"], times["batch4_seconds"] if self._drain else None
            keep_four = self._drain and (batch != "auto" or _batch4_pays(t1, t4))
            runners = [self._compile_for_start(shape, n) for n in ((1, DRAIN_BATCH) if keep_four else (1,))]
            started = time.perf_counter()
            for runner in runners:
                time_runner(runner, self.spec, 1)
            self.startup.warm_runs += time.perf_counter() - started
        else:
            one = self._compile_for_start(shape, 1)
            four = self._compile_for_start(shape, DRAIN_BATCH) if self._drain else None
            started = time.perf_counter()
            time_runner(one, self.spec, 2)  # first runs allocate; do not time them
            t1, t4 = time_runner(one, self.spec, 5), None
            if four is not None:
                time_runner(four, self.spec, 1)
                t4 = time_runner(four, self.spec, 3)
            if key:
                batch_timing.remember(self.options.cache_dir, key, t1, t4)
            self.startup.timing += time.perf_counter() - started
        if t4 is None:
            return WarmupReport(t1, None, None, shape, remembered)
        # A partial batch is padded to 4 only where that beats running its images one by one; a full
        # batch always runs at 4 when the user asked for 4.
        pad_from = next((n for n in (2, 3) if t4 < n * t1), DRAIN_BATCH)
        if batch == "auto" and not _batch4_pays(t1, t4):
            log.info("batch auto: at %dx%d batch 4 (%.1f ms) does not beat 4 x batch 1 (%.1f ms); draining off",
                     shape[1], shape[0], t4 * 1e3, t1 * 1e3)
            self.runners.pop((shape, DRAIN_BATCH), None)
            return WarmupReport(t1, t4, None, shape, remembered)
        return WarmupReport(t1, t4, pad_from, shape, remembered)

    def _warm_concurrent(self) -> None:
        """Where this process has at least two cores to split and a warmed shape keeps batch 4, a batch
        of 3-4 snapshots of that shape runs as two half batches on two streams (ConcurrentRunner; one
        job in flight keeps the one-stream batch-1 model). Compiled and run twice per such shape here,
        as the first runs allocate."""
        cores = len(os.sched_getaffinity(0))
        if min(self.options.threads or cores, cores) < CONCURRENT_STREAMS:
            return  # one thread (e.g. a pool worker per core): nothing to split
        for shape, warmup in self.warmups.items():
            if warmup.pad_partial_from is None:
                continue
            runner = compile_concurrent(self._model, self.spec, DRAIN_BATCH // CONCURRENT_STREAMS, self.options,
                                        CONCURRENT_STREAMS, self._core, shape)
            part = np.full((runner.batch, *shape, 3), 114, np.uint8)
            for _ in range(2):
                runner.infer_parts([part] * CONCURRENT_STREAMS)
            self.concurrent[shape] = runner

    @property
    def max_batch(self) -> int:
        """How many snapshots one batch takes: 4 when any warmed shape keeps batch 4."""
        return DRAIN_BATCH if any(w.pad_partial_from is not None for w in self.warmups.values()) else 1

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
        """At load: every camera's classes exist and its preprocessing agrees with the model's."""
        for settings in [book.default, *book.cameras.values()]:
            try:
                self.class_ids(settings.classes)
                check_against_model(settings, self.spec.preprocessing)
            except ConfigError as exc:
                raise ConfigError(f"camera {settings.camera_id or 'default'}: {exc}") from exc

    def settings_for(self, settings: CameraSettings | None, confidence: float | None = None) -> CameraSettings:
        """What a job runs with: the camera's (or job's) settings, the model's where they set none."""
        settings = with_model_defaults(settings or CameraSettings(), self.spec.preprocessing, self.spec.confidence)
        return settings if confidence is None else replace(settings, confidence=confidence)

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
            reduction = choose_reduction(header, crop_w, crop_h, min(self.input_shape_for(crop_h, crop_w)))
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
        return self.run_prepared(self.prepare_batch(items, confidence))

    def _prepare_one(self, index: int, snapshot: Snapshot, settings: CameraSettings) -> PreparedItem:
        """Decode and letterbox one snapshot into a tensor of its own."""
        timings = StageTimings()
        t0 = time.perf_counter()
        decoded = self._decode(snapshot, settings)
        t1 = time.perf_counter()
        preprocessing = preprocessing_of(settings)
        if self.rect:
            tensor, transform = prepare_rect(decoded, self.imgsz, roi=settings.roi, preprocessing=preprocessing)
        else:
            tensor = np.empty((*self.spec.imgsz, 3), np.uint8)
            transform = prepare(decoded, tensor, roi=settings.roi, preprocessing=preprocessing)
        timings.decode, timings.preprocess = t1 - t0, time.perf_counter() - t1
        return PreparedItem(index, tensor, transform, settings, timings)

    def prepare_batch(self, items: list[tuple[Snapshot, CameraSettings | None]],
                      confidence: float | None = None) -> PreparedBatch:
        """Decode and letterbox every item (side by side on several cores), grouped by input shape.

        Safe on another thread while run_prepared runs an earlier batch: nothing here is shared."""
        calls = [(index, snapshot, self.settings_for(settings, confidence))
                 for index, (snapshot, settings) in enumerate(items)]
        if self._preparers is not None and len(calls) > 1:
            futures = [self._preparers.submit(self._prepare_one, *call) for call in calls]
            outcomes = [future.result for future in futures]
        else:
            outcomes = [lambda call=call: self._prepare_one(*call) for call in calls]
        prepared = PreparedBatch(len(items))
        for (index, *_), outcome in zip(calls, outcomes):
            try:
                item = outcome()
            except InputError as exc:
                prepared.errors[index] = exc
                continue
            prepared.groups.setdefault(item.tensor.shape[:2], []).append(item)
        return prepared

    def run_prepared(self, prepared: PreparedBatch) -> list[DetectionResult | InputError]:
        """Inference and postprocess of a prepared batch, one input shape at a time."""
        results: list[DetectionResult | InputError | None] = [None] * prepared.size
        for index, error in prepared.errors.items():
            results[index] = error
        for shape, items in prepared.groups.items():
            for start in range(0, len(items), self.max_batch):
                self._run_chunk(shape, items[start : start + self.max_batch], results)
        return results  # type: ignore[return-value]

    def _run_chunk(self, shape: tuple[int, int], chunk: list[PreparedItem],
                   results: list[DetectionResult | InputError | None]) -> None:
        warmup = self.warmups.get(shape)
        pad_from = warmup.pad_partial_from if warmup is not None else None
        concurrent = self.concurrent.get(shape)
        if concurrent is not None and len(chunk) > concurrent.batch:
            t0 = time.perf_counter()
            outputs = self._infer_concurrent(concurrent, chunk)
            infer_time, batch_size = time.perf_counter() - t0, len(chunk)
            infer_times = [infer_time] * len(chunk)
        elif pad_from is not None and len(chunk) >= pad_from:
            tensors = [item.tensor for item in chunk]
            tensors += [tensors[0]] * (DRAIN_BATCH - len(chunk))  # padding slots: outputs ignored
            t0 = time.perf_counter()
            batch_out = self._runner(shape, DRAIN_BATCH).infer(np.stack(tensors))
            infer_time, batch_size = time.perf_counter() - t0, len(chunk)
            outputs, infer_times = list(batch_out[: len(chunk)]), [infer_time] * len(chunk)
        else:
            outputs, infer_times, batch_size = [], [], 1
            runner = self._runner(shape, 1)
            for item in chunk:
                t0 = time.perf_counter()
                outputs.append(runner.infer(item.tensor[None])[0])
                infer_times.append(time.perf_counter() - t0)
        for item, output, infer_time in zip(chunk, outputs, infer_times):
            if isinstance(output, Exception):  # its part's infer request failed: its jobs alone fail
                results[item.index] = output
                continue
            t0 = time.perf_counter()
            flt = DetectionFilter(confidence=item.settings.confidence, iou=self.iou,
                                  classes=self.class_ids(item.settings.classes), max_detections=self.max_detections)
            detections = to_detections(output, end2end=self.spec.end2end, transform=item.transform, flt=flt,
                                       class_names=self.spec.names)
            item.timings.infer, item.timings.postprocess = infer_time, time.perf_counter() - t0
            results[item.index] = DetectionResult(detections, item.timings, batch_size,
                                                  item.transform.original_width, item.transform.original_height)

    @staticmethod
    def _infer_concurrent(runner: ConcurrentRunner, chunk: list[PreparedItem]) -> list:
        """The chunk in parts of runner.batch (the last padded with its first tensor), run side by side;
        per item, its output or its part's error."""
        parts = [chunk[start : start + runner.batch] for start in range(0, len(chunk), runner.batch)]
        tensors = []
        for part in parts:
            stack = [item.tensor for item in part]
            tensors.append(np.stack(stack + [stack[0]] * (runner.batch - len(stack))))
        outputs = []
        for part, out in zip(parts, runner.infer_parts(tensors)):
            outputs += [out] * len(part) if isinstance(out, Exception) else list(out[: len(part)])
        return outputs

    # --- the end -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the compiled models, their infer requests and the decode threads now, while the
        interpreter is whole. Left to the interpreter's exit, OpenVINO's objects are destroyed in no set
        order (or not at all, when a daemon thread still refers to them) and its threads can end the
        process with std::terminate. The detector serves nothing afterwards."""
        if self._preparers is not None:
            self._preparers.shutdown(wait=True)
            self._preparers = None
        self.concurrent.clear()
        self.runners.clear()
