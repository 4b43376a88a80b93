"""OpenVINO IR -> compiled model: tensor in, raw output out. Knows nothing of boxes. One stream (latency
hint) for one job in flight; a two-stream twin (ConcurrentRunner) runs a backlog's batch in halves.

A model is a directory as ultralytics exports it (`*.xml`, `*.bin`, `metadata.yaml`), a bare `.xml`
with explicit settings, or an export folder whose MODEL_CARD.json names the IR directory to `serve`.
What the model was trained with (CLAHE, its clip and tiles, the alert classes, the default confidence)
comes from its card (worker/model/card.py): MODEL_CARD.json, or the `deer_worker:` mapping in the IR's
metadata.yaml; a plain ultralytics IR has neither and gets the defaults. The uint8 HWC BGR input is converted to what the network wants
(float, RGB, /255, NCHW) by a PrePostProcessor compiled into the graph.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import openvino as ov
import yaml

from worker.constants import PRECISIONS
from worker.errors import ModelLoadError
from worker.inference.preprocess import Preprocessing
from worker.model.card import CARD_FILE, ModelCard, has_card, no_alert_warning, resolve_alert_classes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    xml: Path
    name: str
    names: tuple[str, ...]
    imgsz: tuple[int, int]  # (height, width)
    end2end: bool
    weights: str  # "fp32" | "int8" (what the IR stores; inference precision is separate)
    version: str = ""
    dynamic: bool = False  # input [?,3,?,?]: reshaped and compiled per (shape, batch)
    preprocessing: Preprocessing | None = None  # None: the model records none (cameras decide)
    confidence: float | None = None  # the model's default threshold, where it records one
    alert_classes: tuple[str, ...] = ()  # the model's classes whose detection is `deer_detected` (resolved at load)
    iou: float | None = None  # the NMS IoU the model card records (the raw head's default), where it records one
    card: Path | None = None  # the MODEL_CARD.json followed, if any

    @property
    def num_classes(self) -> int:
        return len(self.names)


def files_sha256(*paths: Path) -> str:
    """sha256 over the files' bytes in order (a checkpoint; an IR's .xml and .bin): content, not path."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _find_xml(path: Path) -> Path:
    if path.is_file():
        if path.suffix != ".xml":
            raise ModelLoadError(f"{path}: a model is an OpenVINO IR directory or its .xml file")
        return path
    if not path.exists():
        raise ModelLoadError(f"{path}: model path does not exist")
    xmls = sorted(path.glob("*.xml"))
    if len(xmls) != 1:
        raise ModelLoadError(f"{path}: expected exactly one .xml in the model directory, found {len(xmls)}")
    return xmls[0]


def _read_metadata(xml: Path) -> dict:
    meta_path = xml.parent / "metadata.yaml"
    if not meta_path.exists():
        return {}
    try:
        meta = yaml.safe_load(meta_path.read_text())
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{meta_path}: not valid YAML ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_path}: expected a mapping of keys")
    return meta


def _is_quantized(model: ov.Model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def load_spec(path: str | Path, *, names: tuple[str, ...] | None = None, imgsz: int | None = None,
              end2end: bool | None = None) -> tuple[ModelSpec, ov.Model]:
    """Read and check a model; explicit arguments fill in (or must agree with) metadata.yaml."""
    path, card_path = Path(path), None
    if has_card(path):
        card_path = path / CARD_FILE
        card = ModelCard.read(path)
        path = path / card.serve
        if not path.exists():
            raise ModelLoadError(f"{card_path}: serve names {card.serve!r}, which is not in the folder")
    xml = _find_xml(path)
    bin_path = xml.with_suffix(".bin")
    if not bin_path.exists():
        raise ModelLoadError(f"{bin_path}: weights file missing beside {xml.name}")
    meta = _read_metadata(xml)
    try:
        model = ov.Core().read_model(xml)
    except RuntimeError as exc:
        raise ModelLoadError(f"{xml}: OpenVINO cannot read it ({str(exc).splitlines()[0]})") from exc
    if len(model.inputs) != 1 or len(model.outputs) < 1:
        raise ModelLoadError(f"{xml}: expected one image input, got {len(model.inputs)} inputs")
    in_shape = model.input(0).get_partial_shape()
    out_shape = model.output(0).get_partial_shape()
    if in_shape.rank.get_length() != 4:
        raise ModelLoadError(f"{xml}: input must be NCHW, got {in_shape}")
    meta_path = xml.parent / "metadata.yaml"

    if names is None:
        raw_names = meta.get("names")
        if isinstance(raw_names, dict):
            names = tuple(str(raw_names[k]) for k in sorted(raw_names))
        elif isinstance(raw_names, list):
            names = tuple(str(n) for n in raw_names)
    if imgsz is None:
        meta_imgsz = meta.get("imgsz")
        if isinstance(meta_imgsz, (list, tuple)) and len(meta_imgsz) == 2:
            imgsz_hw = (int(meta_imgsz[0]), int(meta_imgsz[1]))
        elif in_shape[2].is_static and in_shape[3].is_static:
            imgsz_hw = (in_shape[2].get_length(), in_shape[3].get_length())
        else:
            raise ModelLoadError(f"{xml}: dynamic input size and no imgsz in {meta_path.name}; pass imgsz")
    else:
        imgsz_hw = (imgsz, imgsz)
    if in_shape[2].is_static and (in_shape[2].get_length(), in_shape[3].get_length()) != imgsz_hw:
        raise ModelLoadError(
            f"{meta_path}: imgsz {list(imgsz_hw)} disagrees with the IR input {in_shape} of {xml.name}"
        )

    detected_end2end = out_shape.rank.get_length() == 3 and out_shape[2].is_static and out_shape[2].get_length() == 6
    if end2end is None:
        end2end = bool(meta.get("end2end", detected_end2end))
    if end2end != detected_end2end:
        raise ModelLoadError(
            f"{meta_path}: end2end={end2end} but {xml.name} outputs {out_shape} "
            f"({'(B,300,6)' if end2end else '(B,4+nc,A)'} expected)"
        )
    if not end2end:
        channels = out_shape[1].get_length() if out_shape[1].is_static else None
        if names is None and channels:
            names = tuple(str(i) for i in range(channels - 4))
        if channels is not None and names is not None and channels != 4 + len(names):
            raise ModelLoadError(
                f"{meta_path}: {len(names)} class names but {xml.name} outputs {channels - 4} class scores"
            )
    if not names:
        raise ModelLoadError(f"{xml}: no class names ({meta_path.name} missing or has no 'names'); pass names")

    if card_path is None:
        card = ModelCard.from_ir_metadata(meta, str(meta_path))
    where = str(card_path) if card_path is not None else f"{meta_path}: deer_worker"
    try:
        alert_classes = resolve_alert_classes(card.alert_classes, names)
    except ValueError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    warning = no_alert_warning(alert_classes, names)
    if warning:
        log.warning("%s: %s", xml, warning)
    spec = ModelSpec(
        xml=xml,
        name=str(meta.get("name") or xml.parent.name.removesuffix("_openvino_model") or xml.stem),
        names=names,
        imgsz=imgsz_hw,
        end2end=end2end,
        weights="int8" if _is_quantized(model) else "fp32",
        version=card.version or str(meta.get("model_version") or meta.get("date") or ""),
        dynamic=not (in_shape[2].is_static and in_shape[3].is_static),
        preprocessing=card.preprocessing, confidence=card.confidence, alert_classes=alert_classes, iou=card.iou,
        card=card_path,
    )
    return spec, model


@dataclass
class CompileOptions:
    threads: int = 0  # 0 = let OpenVINO choose (all physical cores)
    pin_threads: bool = True
    precision: str = "f32"  # inference precision; "default" lets the CPU pick (bf16 where it has it)
    cache_dir: str | None = None
    hint: str = "LATENCY"  # one stream for one job in flight; "THROUGHPUT" for a backlog's batches (ConcurrentRunner)
    streams: int = 0  # THROUGHPUT only: streams to split the threads into (0 = OpenVINO's choice)


@dataclass
class CompiledRunner:
    """One compiled model for one static batch size and input shape, with its own infer request."""

    batch: int
    compiled: ov.CompiledModel
    request: ov.InferRequest = field(init=False)
    shape: tuple[int, int] = field(init=False)  # (H, W) of the input

    def __post_init__(self) -> None:
        self.request = self.compiled.create_infer_request()
        _, height, width, _ = self.compiled.input(0).get_shape()  # NHWC after the PrePostProcessor
        self.shape = (height, width)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """(B,H,W,3) uint8 -> first output as a float32 array (a copy: the request reuses its memory)."""
        self.request.infer({0: tensor}, share_inputs=True)
        return self.request.get_output_tensor(0).data.copy()


@dataclass
class ConcurrentRunner:
    """One compiled model with an infer request per stream: the parts of a batch run side by side, each
    stream on its own share of the cores. Under a backlog this keeps the cores busy when other work
    (decode, the queue's Python) takes one of them for a while: one stream of all threads waits at
    each layer for its slowest thread, two streams of fewer threads only lose the one that was taken."""

    batch: int  # of each part
    compiled: ov.CompiledModel
    requests: list[ov.InferRequest] = field(init=False)
    shape: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.requests = [self.compiled.create_infer_request() for _ in range(max(1, streams))]
        _, height, width, _ = self.compiled.input(0).get_shape()
        self.shape = (height, width)

    def infer_parts(self, parts: list[np.ndarray]) -> list[np.ndarray | RuntimeError]:
        """Each (batch,H,W,3) part on its own request, all started before any is waited for; the first
        outputs (copies) in the parts' order. A part whose request fails gets its error, the others
        their outputs: every request is waited for, so none still reads a tensor after this returns."""
        if len(parts) > len(self.requests):
            raise ValueError(f"{len(parts)} parts for {len(self.requests)} infer requests")
        used = self.requests[: len(parts)]
        started: list[ov.InferRequest | RuntimeError] = []
        for request, part in zip(used, parts):
            try:
                request.start_async({0: part}, share_inputs=True)
                started.append(request)
            except RuntimeError as exc:
                started.append(exc)
        outputs: list[np.ndarray | RuntimeError] = []
        for request in started:
            if isinstance(request, RuntimeError):
                outputs.append(request)
                continue
            try:
                request.wait()
                outputs.append(request.get_output_tensor(0).data.copy())
            except RuntimeError as exc:
                outputs.append(exc)
        return outputs


def compile_concurrent(model: ov.Model, spec: ModelSpec, batch: int, options: CompileOptions, streams: int,
                       core: ov.Core | None = None, shape: tuple[int, int] | None = None) -> ConcurrentRunner:
    """The THROUGHPUT-hint twin of compile_model's runner, its threads split into `streams` streams."""
    compiled = _compile(model, spec, batch, replace(options, hint="THROUGHPUT", streams=streams), core, shape)
    return ConcurrentRunner(batch, compiled)


def compile_model(model: ov.Model, spec: ModelSpec, batch: int, options: CompileOptions,
                  core: ov.Core | None = None, shape: tuple[int, int] | None = None) -> CompiledRunner:
    """Compiled at `shape` (H, W; default the model's imgsz): a dynamic model is reshaped to it, static."""
    return CompiledRunner(batch, _compile(model, spec, batch, options, core, shape))


def _compile(model: ov.Model, spec: ModelSpec, batch: int, options: CompileOptions,
             core: ov.Core | None, shape: tuple[int, int] | None) -> ov.CompiledModel:
    if options.precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    core = core or ov.Core()
    if options.cache_dir:
        Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(options.cache_dir)})
    model = model.clone()
    height, width = shape or spec.imgsz
    model.reshape({model.input(0): ov.PartialShape([batch, 3, height, width])})
    ppp = ov.preprocess.PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ov.preprocess.ColorFormat.BGR)
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(
        ov.preprocess.ColorFormat.RGB).scale(255.0)
    ppp.output(0).tensor().set_element_type(ov.Type.f32)
    model = ppp.build()
    config: dict[str, object] = {"PERFORMANCE_HINT": options.hint, "ENABLE_CPU_PINNING": bool(options.pin_threads)}
    if options.hint == "LATENCY":
        config["NUM_STREAMS"] = "1"
    elif options.streams:
        config["NUM_STREAMS"] = str(int(options.streams))
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = int(options.threads)
    if options.precision != "default":
        config["INFERENCE_PRECISION_HINT"] = options.precision
    try:
        return core.compile_model(model, "CPU", config)
    except RuntimeError as exc:
        raise ModelLoadError(f"{spec.xml}: compile failed ({str(exc).splitlines()[0]})") from exc


def inference_precision(runner: CompiledRunner) -> str:
    """What the CPU actually runs non-quantized ops in: "f32", "bf16" or "f16"."""
    return runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def time_runner(runner: CompiledRunner, spec: ModelSpec, repeats: int) -> float:
    """Median seconds of `repeats` inferences on a grey tensor (also serves as the warm-up)."""
    tensor = np.full((runner.batch, *runner.shape, 3), 114, np.uint8)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.infer(tensor)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
