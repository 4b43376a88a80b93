"""`deer-worker export`: a trained ultralytics `.pt` -> end-to-end FP32 IR and (--int8) a calibrated INT8 IR.

Needs the `export` extra (ultralytics, torch, nncf); the worker itself never imports this module.
INT8 calibration images go through the worker's own preprocessing (decode, CLAHE when the model was
trained with it, the ultralytics-identical letterbox), so the ranges NNCF measures are the ranges
the served model sees: calibrating CLAHE-trained models on raw images would skew them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from worker.errors import ConfigError, MissingDependencyError, MissingFileError, UsageError
from worker.inference.imagecodec import decode
from worker.inference.preprocess import prepare
from worker.tools.options import make_dir
from worker.tools.progress import Progress, note

IGNORED_SCOPES = ("none", "head")  # "head": ultralytics' own choice (Sigmoids + the Detect head stay float)
DEFAULT_IGNORED_SCOPE = "none"  # measured faster with equal accuracy on the demo model; see models/demo/README.md


def dataset_images(data_yaml: str | Path, split: str = "train", fraction: float = 1.0) -> list[Path]:
    """Images of an ultralytics data yaml split, `fraction` of them spread evenly (datasets are often
    sorted by scene, so the first N would calibrate on one scene)."""
    from worker.tools.validate import load_data_yaml

    images = load_data_yaml(data_yaml).images(split)
    if not images:
        raise ConfigError(f"{data_yaml}: split '{split}' has no images")
    count = max(1, round(len(images) * fraction))
    step = len(images) / count
    return [images[int(i * step)] for i in range(count)]


def calibration_tensors(images: list[Path], imgsz: int, *, clahe: bool) -> list[np.ndarray]:
    """(1,3,H,W) float32 RGB 0-1 tensors, exactly what the FP32 IR receives from the worker."""
    buffer = np.empty((imgsz, imgsz, 3), np.uint8)
    tensors = []
    progress = Progress(len(images), "calibration images")
    for path in images:
        prepare(decode(path.read_bytes()), buffer, clahe=clahe)
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


def require_export_extra(int8: bool) -> None:
    """The packages the export needs are importable; else one error saying how to install them."""
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics' first import: no update checks
    try:
        import ultralytics  # noqa: F401
        if int8:
            import nncf  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"{exc.name or 'a package'} is not installed: export needs the export "
                                     "extra, pip install -e '.[export]'") from None


def export_fp32(pt: Path, out_dir: Path, *, imgsz: int, batch: int = 1, end2end: bool = True) -> Path:
    """ultralytics export to OpenVINO FP32 (end-to-end YOLO26 head with nms=False, else the raw head)."""
    require_export_extra(int8=False)
    from ultralytics import YOLO

    work = out_dir.parent / f".export-{out_dir.name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    staged = work / pt.name
    shutil.copy2(pt, staged)  # ultralytics writes its export beside the .pt
    exported = YOLO(str(staged)).export(format="openvino", imgsz=imgsz, batch=batch, dynamic=False,
                                        nms=False if end2end else None)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.move(str(exported), out_dir)
    shutil.rmtree(work, ignore_errors=True)
    return out_dir


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from worker.tools.options import add_output

    p.add_argument("pt", help="trained ultralytics checkpoint (.pt)")
    p.add_argument("--data", help="ultralytics data yaml with local images to calibrate on (needed with --int8)")
    p.add_argument("--imgsz", type=int, default=640, help="square input size of the exported model (default 640)")
    p.add_argument("--int8", action="store_true", help="also write a calibrated INT8 IR (needs --data)")
    p.add_argument("--fraction", type=float, default=0.5, help="share of the train split used to calibrate")
    p.add_argument("--max-calibration", type=int, default=300, help="cap on calibration images")
    p.add_argument("--clahe", action="store_true", help="the model was trained on CLAHE images: calibrate likewise")
    p.add_argument("--batch", type=int, choices=[1, 4], default=1, help="static batch of the exported IR")
    p.add_argument("--ignored-scope", choices=IGNORED_SCOPES, default=DEFAULT_IGNORED_SCOPE,
                   help="INT8: layers left in float ('head': ultralytics' choice; default 'none', measured "
                        "as accurate and faster)")
    p.add_argument("--split", default="train", help="split to calibrate on (default train)")
    p.add_argument("--out", help="output directory (default models/<pt stem>)")
    add_output(p)


def _checked_inputs(args: argparse.Namespace) -> tuple[Path, list[Path]]:
    """Everything that can be wrong with the inputs, found before the minutes-long FP32 export:
    -> (the checkpoint, the calibration images, empty without --int8)."""
    pt = Path(args.pt).expanduser().resolve()
    if not pt.is_file():
        raise MissingFileError(f"checkpoint {args.pt} not found: pass the trained ultralytics .pt")
    if args.int8 and not args.data:
        raise UsageError("--int8 needs --data DATA.yaml: its images calibrate the INT8 ranges")
    require_export_extra(args.int8)
    images = dataset_images(args.data, args.split, args.fraction)[: args.max_calibration] if args.int8 else []
    return pt, images


def run(args: argparse.Namespace) -> int:
    pt, calibration_images = _checked_inputs(args)
    stem = pt.stem
    out = make_dir(args.out or f"models/{stem}", "output folder")
    started = time.time()
    note(f"export: {pt.name} -> FP32 IR (ultralytics, a few minutes)")
    fp32 = export_fp32(pt, out / f"{stem}_openvino_model", imgsz=args.imgsz, batch=args.batch)
    card = {"source": str(pt), "source_sha256": _sha256(pt),
            "data": str(Path(args.data).resolve()) if args.data else None,
            "imgsz": args.imgsz, "batch": args.batch, "clahe": args.clahe,
            "fp32": {"dir": str(fp32), "size_mb": _size_mb(fp32)}}
    if args.int8:
        tensors = calibration_tensors(calibration_images, args.imgsz, clahe=args.clahe)
        note(f"export: quantizing to INT8 on {len(tensors)} images (NNCF)")
        int8 = quantize_ir(fp32, out / f"{stem}_int8_openvino_model", tensors, ignored_scope=args.ignored_scope,
                           extra_metadata={"clahe": args.clahe})
        card["int8"] = {"dir": str(int8), "size_mb": _size_mb(int8), "calibration_images": len(tensors),
                        "calibration_split": args.split, "ignored_scope": args.ignored_scope, "preset": "mixed"}
    card["wall_s"] = round(time.time() - started, 1)
    (out / "MODEL_CARD.json").write_text(json.dumps(card, indent=2) + "\n")
    markdown = _card_markdown(card)
    (out / "MODEL_CARD.md").write_text(markdown)
    print(json.dumps(card, indent=2) if args.json else markdown, end="\n" if args.json else "")
    return 0


def _card_markdown(card: dict) -> str:
    lines = [f"# Model card: {Path(card['source']).stem}", "",
             f"- source: `{card['source']}` (sha256 `{card['source_sha256']}`)",
             f"- data: `{card['data'] or 'none (FP32 only)'}`", f"- imgsz {card['imgsz']}, batch {card['batch']}, CLAHE {card['clahe']}",
             f"- FP32 IR: `{card['fp32']['dir']}` ({card['fp32']['size_mb']} MB)"]
    if "int8" in card:
        i = card["int8"]
        lines.append(f"- INT8 IR: `{i['dir']}` ({i['size_mb']} MB), NNCF preset {i['preset']}, "
                     f"{i['calibration_images']} calibration images from '{i['calibration_split']}', "
                     f"ignored scope: {i['ignored_scope']}")
    lines += ["", "Validate the INT8 drop with `deer-worker validate --model FP32_DIR --model INT8_DIR --data DATA.yaml`."]
    return "\n".join(lines) + "\n"
