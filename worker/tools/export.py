"""`deer-worker export`: a trained ultralytics `.pt` -> a model folder: dynamic-shape IRs with both heads
(end-to-end one-to-one `nms=False`, and the raw one-to-many head the worker follows with NMS), FP32 and
(--int8) INT8, and a MODEL_CARD.json (worker/model/card.py) naming the IR to serve (`serve`), the model's own
preprocessing and its alert classes (--deer-class: the classes whose detection is `deer_detected`).

Needs the `export` extra (ultralytics, torch, nncf); the worker itself never imports this module.
With --data, every IR is scored against the .pt the way ultralytics `val` scores it (the reference the
user runs today) and the fastest IR within the accuracy gate serves. Without --data nothing is measured
and the raw FP32 IR serves: it runs the .pt's own default head (one-to-many + NMS).

INT8 calibration images go through the model's preprocessing (CLAHE when the model was trained with it and
the data is not already CLAHE-processed) and the ultralytics letterbox at the rectangular shapes the
worker serves (16:9, 4:3 and 1:1 mixed), so the ranges NNCF measures are the ranges the served model sees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import yaml

from worker.constants import DEFAULT_IOU
from worker.errors import ConfigError, MissingDependencyError, MissingFileError, UsageError
from worker.evaluation.dataset import label_path, load_data_yaml
from worker.evaluation.isa import NATIVE, process_cap
from worker.evaluation.gate import DEFAULT_MAX_DROP_MAP, DEFAULT_MAX_DROP_MAP50, gate_limits, within_gate
from worker.inference.imagecodec import decode
from worker.inference.preprocess import Preprocessing, apply_clahe, input_shape, prepare, prepare_rect
from worker.inference.runtime import files_sha256
from worker.model.card import ModelCard, no_alert_warning, resolve_alert_classes
from worker.tools.options import make_dir
from worker.tools.progress import Progress, note
from worker.tools.reference import checkpoint_facts

IGNORED_SCOPES = ("none", "head")  # "head": ultralytics' own choice (Sigmoids + the Detect head stay float)
DEFAULT_IGNORED_SCOPE = "none"  # measured faster with equal accuracy on the demo model; see models/demo/README.md
HEADS = ("end2end", "raw")  # end2end: one-to-one head, (B,300,6); raw: one-to-many head, (B,4+nc,A) + NMS
CALIBRATION_ASPECTS = ((1080, 1920), (480, 640), (640, 640))  # 16:9, 4:3, 1:1: the worker's warmed shapes
PREPROCESSED_KEY = "deer_worker_preprocessed"  # a data yaml key: its images are already CLAHE-processed


def ir_dir_name(stem: str, head: str, weights: str, dynamic: bool = True) -> str:
    """`<stem>_<dynamic|static>_<head>_<weights>_openvino_model` (ultralytics recognises the _openvino_model
    suffix)."""
    return f"{stem}_{'dynamic' if dynamic else 'static'}_{head}_{weights}_openvino_model"


def dataset_images(data_yaml: str | Path, split: str = "train", fraction: float = 1.0) -> list[Path]:
    """Images of an ultralytics data yaml split, `fraction` of them spread evenly (datasets are often
    sorted by scene, so the first N would calibrate on one scene)."""
    images = load_data_yaml(data_yaml).images(split)
    if not images:
        raise ConfigError(f"{data_yaml}: split '{split}' has no images")
    count = max(1, round(len(images) * fraction))
    step = len(images) / count
    return [images[int(i * step)] for i in range(count)]


def data_is_preprocessed(data_yaml: str | Path | None, flag: bool) -> bool:
    """--data-preprocessed, or `deer_worker_preprocessed: true` in the data yaml."""
    if flag or not data_yaml:
        return flag
    raw = yaml.safe_load(Path(data_yaml).read_text()) or {}
    return bool(isinstance(raw, dict) and raw.get(PREPROCESSED_KEY))


def calibration_shapes(imgsz: int) -> list[tuple[int, int]]:
    """The rect (h, w) inputs the worker serves at imgsz: 16:9, 4:3, 1:1."""
    return [input_shape(h, w, imgsz) for h, w in CALIBRATION_ASPECTS]


def calibration_tensors(images: list[Path], imgsz: int, *, clahe: tuple[float, tuple[int, int]] | None = None,
                        square: bool = False) -> list[np.ndarray]:
    """(1,3,H,W) float32 RGB 0-1 tensors, what the IR receives from the worker: the worker's own preprocessing
    (preprocess.prepare_rect / prepare: the model's CLAHE, then the ultralytics letterbox). Each image goes to
    the rect shape the worker gives it; every third one to the 1:1 shape, so 16:9, 4:3 and 1:1 inputs are all
    calibrated (square=True: all at imgsz x imgsz, for a static IR). clahe = (clip, tiles) or None."""
    preprocessing = Preprocessing(clahe=True, clahe_clip=clahe[0], clahe_tiles=tuple(clahe[1])) if clahe else Preprocessing()
    progress = Progress(len(images), "calibration images")
    tensors = []
    for i, path in enumerate(images):
        decoded = decode(path.read_bytes())
        if square or i % 3 == 2:
            buffer = np.empty((imgsz, imgsz, 3), np.uint8)
            prepare(decoded, buffer, preprocessing=preprocessing)
        else:
            buffer, _ = prepare_rect(decoded, imgsz, preprocessing=preprocessing)
        tensors.append(np.ascontiguousarray(buffer[..., ::-1].transpose(2, 0, 1)[None], np.float32) / 255.0)
        progress.step()
    return tensors


def head_ignored_scope(model):
    """ultralytics' INT8 export scope for Detect heads: every Sigmoid and every op of the head."""
    import nncf

    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    head = sigmoids[-1].split("/", 1)[0] if sigmoids else ""
    names = [op.get_friendly_name() for op in ops
             if op.get_type_name() == "Sigmoid" or (head and op.get_friendly_name().startswith((f"{head}/", f"{head}.dfl")))]
    return nncf.IgnoredScope(names=names, validate=False)


def quantize_ir(fp32_dir: Path, out_dir: Path, tensors: list[np.ndarray], *, ignored_scope: str = DEFAULT_IGNORED_SCOPE,
                extra_metadata: dict | None = None) -> Path:
    """NNCF post-training quantization (preset MIXED: symmetric weights, asymmetric activations)."""
    import nncf
    import openvino as ov

    xml = next(fp32_dir.glob("*.xml"))
    model = ov.Core().read_model(xml)
    scope = head_ignored_scope(model) if ignored_scope == "head" else None
    quantized = nncf.quantize(model, nncf.Dataset(tensors), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(tensors), ignored_scope=scope)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    ov.save_model(quantized, out_dir / xml.name, compress_to_fp16=False)
    meta = yaml.safe_load((fp32_dir / "metadata.yaml").read_text())
    meta.update({"precision": "int8", "int8_ignored_scope": ignored_scope, "int8_calibration_images": len(tensors),
                 **(extra_metadata or {})})
    (out_dir / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return out_dir


def require_export_extra(int8: bool, needed_by: str = "export") -> None:
    """The packages the export (or another user of a .pt) needs are importable; else one error saying how
    to install them."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics' first import: no update checks
    try:
        import ultralytics  # noqa: F401
        if int8:
            import nncf  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"{exc.name or 'a package'} is not installed: {needed_by} needs the export "
                                     "extra, pip install -e '.[export]'") from None


def export_fp32(pt: Path, out_dir: Path, *, imgsz: int, batch: int = 1, end2end: bool = True,
                dynamic: bool = True) -> Path:
    """ultralytics export to OpenVINO FP32: end-to-end YOLO26 head (nms=False) or the raw head (nms=None);
    dynamic=True leaves batch, height and width open, so the worker compiles it per rect shape."""
    require_export_extra(int8=False)
    from ultralytics import YOLO

    work = out_dir.parent / f".export-{out_dir.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    staged = work / pt.name
    shutil.copy2(pt, staged)  # ultralytics writes its export beside the .pt
    exported = YOLO(str(staged)).export(format="openvino", imgsz=imgsz, batch=batch, dynamic=dynamic,
                                        nms=False if end2end else None)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.move(str(exported), out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def write_ir_metadata(ir_dir: Path, card: ModelCard) -> None:
    """Add the card's `deer_worker:` mapping (preprocessing, alert classes, confidence) to an IR's
    metadata.yaml, so a bare IR dir knows what the model expects."""
    path = ir_dir / "metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    meta["deer_worker"] = card.ir_metadata()
    path.write_text(yaml.safe_dump(meta, sort_keys=False))


def clahe_dataset(data_yaml: Path, split: str, clip: float, tiles: tuple[int, int], work: Path) -> Path:
    """A copy of one split with the model's CLAHE applied (labels linked), for ultralytics val, which cannot
    apply it: the .pt and the IRs are scored on what the model sees in the user's pipeline."""
    spec = load_data_yaml(data_yaml)
    images_dir, labels_dir = work / "images", work / "labels"
    images_dir.mkdir(parents=True)
    labels_dir.mkdir()
    for i, image in enumerate(spec.images(split)):
        name = f"{i:05d}_{image.stem}"
        processed = apply_clahe(decode(image.read_bytes()).image, clip, tiles)
        cv2.imwrite(str(images_dir / f"{name}.png"), processed)  # lossless: no second JPEG loss
        label = label_path(image)
        if label.exists():
            shutil.copy(label, labels_dir / f"{name}.txt")
    out = work / "data.yaml"
    out.write_text(yaml.safe_dump({"path": str(work), "train": "images", "val": "images",
                                   "names": dict(enumerate(spec.names))}))
    return out


def gate_verdict(accuracy: dict, reference: dict, max_drop_map50: float, max_drop_map: float) -> tuple[dict, bool]:
    """(delta vs the .pt, in fractions, negative = worse; within the gate?)."""
    delta = {k: round(accuracy[k] - reference[k], 4) for k in ("mAP50", "mAP50-95")}
    return delta, within_gate({k: -v for k, v in delta.items()}, gate_limits(max_drop_map50, max_drop_map))


def measure_latency_ms(ir_dir: Path, shape: tuple[int, int], repeats: int = 20, precision: str = "f32") -> float:
    """Median inference ms of one (1,3,h,w) input on this host (f32 pinned, 1 stream), for choosing a head."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(next(ir_dir.glob("*.xml")))
    if model.input(0).get_partial_shape().is_dynamic:
        model.reshape({model.input(0): [1, 3, *shape]})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": "1",
                                                 "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    tensor = np.random.default_rng(0).random((1, 3, *shape), dtype=np.float32)
    request.infer({0: tensor})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        request.infer({0: tensor})
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1e3, 2)


def _size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 2)


def _tiles(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected COLSxROWS such as 8x8, got {text!r}") from None
    if cols < 1 or rows < 1:
        raise argparse.ArgumentTypeError(f"tile grid must be positive, got {text!r}")
    return cols, rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    from worker.tools.options import add_isa, add_output

    p.add_argument("pt", help="trained ultralytics checkpoint (.pt)")
    add_isa(p, "avx2", "the user's CPU: the scores and the ms column as AVX2 kernels compute them; the whole export "
                       "runs capped, so calibration is slower on a bigger CPU")
    p.add_argument("--data", help="ultralytics data yaml: its train split calibrates INT8, its --val-split scores every "
                                  "IR against the .pt (needed with --int8)")
    p.add_argument("--imgsz", type=int, default=None, help="long side of the model input (default: the .pt's training imgsz)")
    p.add_argument("--int8", action="store_true", help="also write calibrated INT8 IRs (needs --data)")
    p.add_argument("--heads", default="end2end,raw",
                   help="heads to export, comma-separated from end2end, raw (default both: the card serves the one "
                        "that keeps the .pt's accuracy)")
    p.add_argument("--static", action="store_true", help="square static IRs (imgsz x imgsz) instead of dynamic ones")
    p.add_argument("--name", help="model name for the card (default: the .pt's stem)")
    p.add_argument("--version", dest="model_version", help='version as you name it, e.g. "YOLO26s v4.1" '
                                                          "(results report it; default: the name)")
    p.add_argument("--clahe", action="store_true", help="the model was trained on CLAHE images (needs --clahe-clip)")
    p.add_argument("--clahe-clip", type=float, help="the CLAHE clip limit the TRAINING data was made with (required "
                                                    "with --clahe: never assumed)")
    p.add_argument("--clahe-tiles", type=_tiles, default=(8, 8), help="the CLAHE tile grid, COLSxROWS (default 8x8)")
    p.add_argument("--data-preprocessed", action="store_true",
                   help=f"the --data images are already CLAHE-processed: do not apply it again (or put "
                        f"{PREPROCESSED_KEY}: true in the data yaml)")
    p.add_argument("--deer-class", action="append", metavar="NAME[,NAME]",
                   help="the class(es) whose detection is deer_detected (repeatable or comma-separated; default: "
                        "the class named deer in any case, else a one-class model's only class, else none)")
    p.add_argument("--conf", type=float, default=0.25, help="the model's default confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=DEFAULT_IOU, help=f"NMS IoU the raw head is served with (default {DEFAULT_IOU})")
    p.add_argument("--fraction", type=float, default=0.5, help="share of the train split used to calibrate")
    p.add_argument("--max-calibration", type=int, default=300, help="cap on calibration images")
    p.add_argument("--batch", type=int, choices=[1, 4], default=1, help="batch of a --static IR (dynamic IRs: any)")
    p.add_argument("--ignored-scope", choices=IGNORED_SCOPES, default=DEFAULT_IGNORED_SCOPE,
                   help="INT8: layers left in float ('head': ultralytics' choice; default 'none', measured "
                        "as accurate and faster)")
    p.add_argument("--split", default="train", help="split to calibrate on (default train)")
    p.add_argument("--val-split", default="val", help="split that scores the IRs against the .pt (default val)")
    p.add_argument("--max-drop-map50", type=float, default=DEFAULT_MAX_DROP_MAP50,
                   help="largest mAP50 drop vs the .pt an IR may have to serve, a fraction (default 0.003 = 0.3 points)")
    p.add_argument("--max-drop-map", type=float, default=DEFAULT_MAX_DROP_MAP,
                   help="largest mAP50-95 drop vs the .pt, a fraction (default 0.005 = 0.5 points)")
    p.add_argument("--out", help="output folder (default models/<pt stem>); other files in it are kept")
    p.add_argument("--reuse", action="store_true",
                   help="keep IR folders an earlier run of the same command finished in --out; re-measure them and "
                        "rewrite the card")
    add_output(p)


@dataclass(frozen=True)
class CheckedInputs:
    pt: Path
    imgsz: int
    names: tuple[str, ...]  # the checkpoint's classes
    alert_classes: tuple[str, ...]  # resolved against them
    calibration_images: list[Path]  # empty without --int8
    heads: list[str]


def _split_names(values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    if not names:
        raise UsageError("--deer-class: give a class name")
    return names


def _checked_inputs(args: argparse.Namespace) -> CheckedInputs:
    """Everything that can be wrong with the inputs, found in seconds, before the minutes-long export."""
    pt = Path(args.pt).expanduser().resolve()
    if not pt.is_file():
        raise MissingFileError(f"checkpoint {args.pt} not found: pass the trained ultralytics .pt")
    if args.int8 and not args.data:
        raise UsageError("--int8 needs --data DATA.yaml: its images calibrate the INT8 ranges")
    if args.clahe and args.clahe_clip is None:
        raise UsageError("--clahe needs --clahe-clip: the clip limit your training data was made with "
                         "(it is never assumed; e.g. --clahe-clip 3.0)")
    if args.clahe_clip is not None and not args.clahe:
        raise UsageError("--clahe-clip without --clahe: say --clahe if the model was trained on CLAHE images")
    if args.clahe_clip is not None and args.clahe_clip <= 0:
        raise UsageError(f"--clahe-clip must be > 0, got {args.clahe_clip}")
    for flag, value in (("--conf", args.conf), ("--iou", args.iou), ("--fraction", args.fraction)):
        if not 0 < value <= 1:
            raise UsageError(f"{flag} must be in (0, 1], got {value}")
    for flag, value in (("--max-drop-map50", args.max_drop_map50), ("--max-drop-map", args.max_drop_map)):
        if not 0 <= value < 1:
            raise UsageError(f"{flag} must be a fraction in [0, 1), got {value}")
    if args.max_calibration < 1:
        raise UsageError(f"--max-calibration must be at least 1, got {args.max_calibration}")
    if args.imgsz is not None and args.imgsz < 32:
        raise UsageError(f"--imgsz must be at least 32 (the model's stride), got {args.imgsz}")
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if not heads or any(h not in HEADS for h in heads):
        raise UsageError(f"--heads {args.heads!r}: choose from {', '.join(HEADS)}")
    wanted = _split_names(args.deer_class)
    require_export_extra(args.int8)
    trained_imgsz, names = checkpoint_facts(pt)
    if not names:
        raise UsageError(f"{args.pt}: the checkpoint records no class names: not a trained ultralytics detector")
    try:
        alert_classes = resolve_alert_classes(wanted, names)
    except ValueError as exc:
        raise UsageError(f"--deer-class {','.join(wanted)}: {exc}") from None
    warning = no_alert_warning(alert_classes, names)
    if warning:
        note(f"export: {warning}")
    images = dataset_images(args.data, args.split, args.fraction)[: args.max_calibration] if args.int8 else []
    if args.data:
        load_data_yaml(args.data).images(args.val_split)  # a missing val split fails now, not after the export
    return CheckedInputs(pt, args.imgsz or trained_imgsz, names, alert_classes, images, heads)


def run(args: argparse.Namespace) -> int:
    checked = _checked_inputs(args)
    pt, calibration_images, heads, imgsz = checked.pt, checked.calibration_images, checked.heads, checked.imgsz
    stem = pt.stem
    out = make_dir(args.out or f"models/{stem}", "output folder")
    started = time.time()
    dynamic = not args.static
    preprocessed = data_is_preprocessed(args.data, args.data_preprocessed)
    facts = ModelCard(  # what the model is, known before anything is measured; the card adds what export measures
        name=args.name or stem, version=args.model_version or args.name or stem, imgsz=imgsz,
        preprocessing=Preprocessing(args.clahe, args.clahe_clip or Preprocessing().clahe_clip, tuple(args.clahe_tiles)),
        data_preprocessed=preprocessed, alert_classes=checked.alert_classes, confidence=args.conf, iou=args.iou)
    model_clahe = (args.clahe_clip, tuple(args.clahe_tiles)) if args.clahe else None
    data_clahe = None if preprocessed else model_clahe  # never apply CLAHE twice

    def kept(folder: Path) -> bool:  # --reuse: an IR an earlier run of this command finished
        return args.reuse and (folder / "metadata.yaml").exists()

    irs: dict[str, dict] = {}
    fp32_dirs = {}
    for head in heads:
        fp32_dirs[head] = out / ir_dir_name(stem, head, "fp32", dynamic)
        if not kept(fp32_dirs[head]):
            note(f"export: {pt.name} -> FP32 IR, {head} head, {'dynamic' if dynamic else 'static'} (ultralytics)")
            export_fp32(pt, fp32_dirs[head], imgsz=imgsz, batch=1 if dynamic else args.batch,
                        end2end=head == "end2end", dynamic=dynamic)
        irs[fp32_dirs[head].name] = {"head": head, "weights": "fp32", "dynamic": dynamic}
    if args.int8:
        int8_dirs = {head: out / ir_dir_name(stem, head, "int8", dynamic) for head in heads}
        tensors = ([] if all(kept(d) for d in int8_dirs.values())
                   else calibration_tensors(calibration_images, imgsz, clahe=data_clahe, square=not dynamic))
        shapes = sorted({t.shape[2:] for t in tensors}) or calibration_shapes(imgsz)
        for head in heads:
            int8 = int8_dirs[head]
            if not kept(int8):
                note(f"export: quantizing the {head} head to INT8 on {len(tensors)} images at {shapes} (NNCF)")
                quantize_ir(fp32_dirs[head], int8, tensors, ignored_scope=args.ignored_scope,
                            extra_metadata={"int8_calibration_shapes": [list(s) for s in shapes]})
            calibrated = yaml.safe_load((int8 / "metadata.yaml").read_text()).get("int8_calibration_images")
            irs[int8.name] = {"head": head, "weights": "int8", "dynamic": dynamic, "calibration_images": calibrated,
                              "calibration_split": args.split, "calibration_shapes": [list(s) for s in shapes],
                              "ignored_scope": args.ignored_scope, "preset": "mixed"}
    for name in irs:
        write_ir_metadata(out / name, facts)
        irs[name]["size_mb"] = _size_mb(out / name)

    speed_shape = calibration_shapes(imgsz)[0] if dynamic else (imgsz, imgsz)
    for name in irs:
        irs[name]["latency_ms"] = {"shape": list(speed_shape), "f32_p50": measure_latency_ms(out / name, speed_shape),
                                   "isa": process_cap()}  # capped (the default, avx2): a proxy, see card_markdown

    reference = None
    if args.data:
        reference = _score_against_pt(pt, args, imgsz, out, irs, data_clahe)
    serve, reason = choose_serve(irs, reference is not None)
    checkpoint = str(pt.relative_to(out.resolve())) if pt.is_relative_to(out.resolve()) else str(pt)  # movable folder
    written = replace(facts, serve=serve, serve_reason=reason, checkpoint=checkpoint, checkpoint_sha256=files_sha256(pt),
                      data=str(Path(args.data).resolve()) if args.data else None,
                      val_split=args.val_split if args.data else None,
                      gate={"max_drop_map50": args.max_drop_map50, "max_drop_map": args.max_drop_map},
                      irs=irs, reference=reference, wall_s=round(time.time() - started, 1))
    written.write(out)
    card = written.to_dict()
    markdown = card_markdown(card)
    print(json.dumps(card, indent=2) if args.json else markdown, end="\n" if args.json else "")
    return 0


def _score_against_pt(pt: Path, args: argparse.Namespace, imgsz: int, out: Path, irs: dict,
                      data_clahe: tuple | None) -> dict:
    """ultralytics val of the .pt (the reference) and of every IR, same data, shapes, matcher, conf and IoU;
    writes accuracy, delta_vs_pt and within_gate into each IR's entry. -> the .pt's own scores."""
    from worker.tools.reference import ultralytics_val

    with tempfile.TemporaryDirectory(prefix="deer-export-val-") as work:
        data, split = Path(args.data), args.val_split
        if data_clahe:
            note("export: applying the model's CLAHE to a copy of the validation split")
            data, split = clahe_dataset(data, args.val_split, *data_clahe, Path(work) / "clahe"), "val"
        note("export: scoring the .pt (ultralytics val, its default head)")
        reference = {"model": pt.name, "head": "one-to-many + NMS (ultralytics default)", "scored_by": "ultralytics val",
                     "split": args.val_split, **ultralytics_val(pt, data, imgsz, split=split)}
        for name, entry in irs.items():
            note(f"export: scoring {name}")
            entry["accuracy"] = ultralytics_val(out / name, data, imgsz, split=split)
            entry["delta_vs_pt"], entry["within_gate"] = gate_verdict(entry["accuracy"], reference,
                                                                     args.max_drop_map50, args.max_drop_map)
    return reference


def choose_serve(irs: dict, measured: bool) -> tuple[str, str]:
    """The IR to serve: the fastest within the accuracy gate; none within it: the most accurate, said so;
    not measured (no --data): the raw FP32 IR, the .pt's own default head."""
    if not measured:
        raw = [n for n, e in irs.items() if e["head"] == "raw" and e["weights"] == "fp32"]
        name = raw[0] if raw else next(iter(irs))
        return name, "no --data: accuracy not measured; the raw head is the .pt's own default head (one-to-many + NMS)"
    passing = [n for n, e in irs.items() if e["within_gate"]]
    if passing:
        name = min(passing, key=lambda n: irs[n]["latency_ms"]["f32_p50"])
        return name, (f"fastest of {len(passing)} IR(s) within the accuracy gate vs the .pt "
                      f"({irs[name]['latency_ms']['f32_p50']} ms at {irs[name]['latency_ms']['shape']})")
    name = max(irs, key=lambda n: (irs[n]["accuracy"]["mAP50-95"], irs[n]["accuracy"]["mAP50"]))
    return name, "NO IR is within the accuracy gate vs the .pt: serving the most accurate; check the table"


def card_markdown(card: dict) -> str:
    ref = card["reference"]
    lines = [f"model {card['name']} ({card['version']}), imgsz {card['imgsz']}, preprocessing {card['preprocessing']}",
             f"checkpoint {card['checkpoint']}"]
    if ref:
        lines.append(f".pt (ultralytics val, default head): mAP50 {ref['mAP50']:.4f} mAP50-95 {ref['mAP50-95']:.4f}")
    header = f"{'IR':<60} {'head':<8} {'weights':<7} {'mAP50':>7} {'mAP50-95':>8} {'d50':>7} {'d50-95':>7} {'gate':>5} {'ms':>7}"
    lines += [header, "-" * len(header)]
    for name, e in card["irs"].items():
        acc, delta = e.get("accuracy"), e.get("delta_vs_pt")
        scores = (f"{acc['mAP50']:>7.4f} {acc['mAP50-95']:>8.4f} {delta['mAP50']:>+7.4f} {delta['mAP50-95']:>+7.4f} "
                  f"{'ok' if e['within_gate'] else 'FAIL':>5}") if acc else f"{'-':>7} {'-':>8} {'-':>7} {'-':>7} {'-':>5}"
        lines.append(f"{name[:60]:<60} {e['head']:<8} {e['weights']:<7} {scores} {e['latency_ms']['f32_p50']:>7.2f}")
    lines.append(f"serve: {card['serve']} ({card['serve_reason']})")
    capped = {e["latency_ms"].get("isa", NATIVE) for e in card["irs"].values()} - {NATIVE}
    if capped:  # the ms column was measured with oneDNN capped: its ratios carry over, its milliseconds do not
        lines.append(f"ms: FP32-precision latency p50 with oneDNN capped to {', '.join(sorted(capped))}, a proxy for "
                     "a CPU without more (ratios, not milliseconds)")
    return "\n".join(lines) + "\n"
