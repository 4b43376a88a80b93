"""Warm-up's batch-1 and batch-4 inference times, remembered next to the compiled-model cache.

Warm-up times batch 1 and batch 4 at each input shape, and that measurement decides whether a partial
batch is padded to 4 and whether batch "auto" keeps batch 4 (Detector._warm_up). Measuring takes 11
inferences per shape (~1 s per shape for YOLO26s on 2 cores, about what compiling it from the cache
costs), so the times are kept in `<cache_dir>/batch-timing/<key>.json`: a start with a filled cache runs
each compiled model once and reuses them. The key is what the times depend on: the IR's bytes, the input
shape, the CPU and the cores this process may use, threads, pinning, precision and hint, the OpenVINO
version. Deleting the cache dir (or its batch-timing folder) measures again at the next start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import openvino as ov

from worker.inference.runtime import files_sha256

log = logging.getLogger(__name__)
FOLDER = "batch-timing"


def model_digest(xml: Path) -> str:
    """sha256 of the IR (.xml and .bin): the same bytes under another path are the same model."""
    return files_sha256(xml, xml.with_suffix(".bin"))


def timing_key(digest: str, shape: tuple[int, int], options, cpu: str) -> str:
    """One key per (model bytes, input shape, CPU and compile settings, OpenVINO version)."""
    material = {"model": digest, "shape": list(shape), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
                "threads": options.threads, "pin_threads": options.pin_threads, "precision": options.precision,
                "hint": options.hint, "openvino": ov.__version__}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]


def recall(cache_dir: str | None, key: str) -> dict | None:
    """{"batch1_seconds": float, "batch4_seconds": float | None} as measured before, or None."""
    if not cache_dir:
        return None
    path = Path(cache_dir) / FOLDER / f"{key}.json"
    try:
        times = json.loads(path.read_text())
        batch1, batch4 = times["batch1_seconds"], times["batch4_seconds"]
        if not (isinstance(batch1, float) and batch1 > 0 and (batch4 is None or isinstance(batch4, float) and batch4 > 0)):
            raise ValueError("not positive seconds")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable: measure again (and overwrite it)
        log.warning("%s: ignoring remembered warm-up times (%s)", path, exc)
        return None
    return {"batch1_seconds": batch1, "batch4_seconds": batch4}


def remember(cache_dir: str | None, key: str, batch1: float, batch4: float | None) -> None:
    """Store the times atomically (workers of a pool may write the same key at once); a cache dir that
    cannot be written only means the next start measures again."""
    if not cache_dir:
        return
    folder = Path(cache_dir) / FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as f:
            json.dump({"batch1_seconds": batch1, "batch4_seconds": batch4, "measured_at": time.time()}, f)
        os.replace(f.name, folder / f"{key}.json")
    except OSError as exc:
        log.warning("%s: warm-up times not remembered (%s); the next start measures again", folder, exc)
