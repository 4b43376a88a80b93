"""`deer-worker tune`: which setting meets the latency budget on this host without losing accuracy?

Two halves, kept apart so the choice can be tested without a CPU-bound minute:
- selection (pure): candidates (model IR x precision x threads x workers x batch x reduced decode x
  shape), eligibility (accuracy drop within the gate; lossless by default, `--max-drop` allows a stated
  loss), the pick (meets the budget at p95, best accuracy, then throughput), the nearest ones when none
  meets it, headroom for --cameras/--interval, and the worker.yaml fragment;
- measuring: every figure is bytes -> detections on the user's snapshots through the worker's own
  Detector (build_detector); the finalists' throughput and p95 through a real queue (an embedded Redis
  and the worker pool); the runtime's limit (benchmark_app's latency loop) shown beside, and the decode
  floor (a plain full decode of the same snapshots).

Accuracy is mAP50 against labels (`--data`) or, without labels, agreement with the reference model's
detections on the same snapshots (F1 of same-class boxes at IoU >= 0.5, `compare`'s box pairing), the
reference being the first FP32 model given. With `--weights MODEL.pt --data`, the reference is the .pt
itself and each IR is scored the way validate gates it (ultralytics val of the IR against the .pt's, as
`deer-worker export` records it in MODEL_CARD.json); lossless then means within validate's gate (mAP50
0.3 and mAP50-95 0.5 points). bf16 (offered only where the CPU has it) changes the numerics: a bf16 row is
lossy until `--data` shows it within the gate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path


from worker.evaluation.agreement import box_f1
from worker.evaluation.dataset import label_path, load_data_yaml, read_labels
from worker.evaluation.gate import DEFAULT_MAX_DROP_MAP, DEFAULT_MAX_DROP_MAP50, evaluate_model
from worker.evaluation.host import cpu_flags, host_line, speed_index
from worker.evaluation.isa import proxy_note
from worker.evaluation.reports import emit_report, require_report_folder, table_stream, write_report
from worker.evaluation.timing import measure_decode_floor, measure_latency, percentile_ms, random_input
from worker.tools.options import int_list

SAMPLES = "models/demo/samples"
# Differences below this are the measurement's noise, not a loss: "lossless" means a drop within it.
LOSSLESS_TOLERANCE = 0.005
# With labels: validate's gate (mAP50 0.3 points, mAP50-95 0.5 points), what `export` and `validate` call lossless.
GATE_MAP50, GATE_MAP = DEFAULT_MAX_DROP_MAP50, DEFAULT_MAX_DROP_MAP
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of a CPU that computes in bf16 natively
NEAREST = 3  # how many near misses a report names when nothing meets the budget
QUEUE_ROUNDS = 3  # picks re-measured through the real queue before the in-process figures are trusted
DEFAULT_SECONDS = 3.0  # per in-process measurement; a default run over the demo IRs stays under 5 minutes


# --- selection (pure) ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    model: str
    name: str
    weights: str = "fp32"  # fp32 | int8
    precision: str = "f32"  # inference precision, pinned: bf16 is a separate, labelled candidate
    threads: int = 1  # per worker
    workers: int = 1
    batch: int = 1
    reduced_decode: bool = False
    shape: str = "square"  # square | rect (rect needs a dynamic IR and `shapes:` in worker.yaml)

    @property
    def label(self) -> str:
        return (f"{self.name} {self.precision} {self.workers}w x {self.threads}t b{self.batch}"
                f"{' rd' if self.reduced_decode else ''}{' rect' if self.shape == 'rect' else ''}")


@dataclass
class Measurement:
    p50_ms: float  # per snapshot, bytes -> detections (a batch-4 job waits for its whole batch)
    p95_ms: float
    images_per_s: float  # all workers together
    accuracy: float  # mAP50 (with --data) or agreement with the reference
    drop: float  # accuracy lost against the reference (>= 0 is worse)
    through_queue: bool = False  # True: p95 and images/s measured through the real queue
    limit_ms: float | None = None  # inference alone, benchmark_app's latency loop (the runtime's limit)
    decode_floor_ms: float | None = None  # a plain full decode of the same snapshots
    drop_map: float | None = None  # mAP50-95 lost against the reference (with labels; gated as validate does)
    verified: bool = True  # False: a bf16 row whose accuracy no labels checked (lossy until --data shows it)


@dataclass
class Row:
    candidate: Candidate
    measurement: Measurement
    eligible: bool
    meets_budget: bool

    def as_dict(self) -> dict:
        return {**asdict(self.candidate), "label": self.candidate.label, **asdict(self.measurement),
                "eligible": self.eligible, "meets_budget": self.meets_budget}


@dataclass
class Choice:
    budget_ms: float
    max_drop: float
    rows: list[Row]
    pick: Row | None
    nearest: list[dict] = field(default_factory=list)  # when nothing meets the budget: what each would cost
    loss_buys: dict | None = None  # with --max-drop: the pick against the best lossless row
    headroom: dict | None = None
    tolerance: float = LOSSLESS_TOLERANCE  # the drop that still counts as lossless

    def as_dict(self) -> dict:
        return {"budget_ms": self.budget_ms, "max_drop": self.max_drop, "lossless_tolerance": self.tolerance,
                "pick": self.pick.as_dict() if self.pick else None, "nearest": self.nearest,
                "loss_buys": self.loss_buys, "headroom": self.headroom, "rows": [r.as_dict() for r in self.rows]}


def worker_splits(cores: int, max_workers: int | None = None) -> list[tuple[int, int]]:
    """(workers, threads per worker) with the cores split between workers: 1..cores workers, 1..cores/k threads."""
    return [(workers, threads) for workers in range(1, min(cores, max_workers or cores) + 1)
            for threads in range(1, cores // workers + 1)]


def candidates(models: list[dict], cores: int, *, precisions=("f32",), batches=(1, 4),
               reduced_decode=(False, True), shapes=("square",)) -> list[Candidate]:
    """Every combination; `models` are {"model", "name", "weights"} (rect only where a model says dynamic)."""
    out = []
    for m in models:
        for precision in precisions:
            for workers, threads in worker_splits(cores):
                for batch in batches:
                    for reduced in reduced_decode:
                        for shape in shapes:
                            if shape == "rect" and not m.get("dynamic"):
                                continue
                            out.append(Candidate(m["model"], m["name"], m.get("weights", "fp32"), precision,
                                                 threads, workers, batch, reduced, shape))
    return out


def bf16_native(flags: set[str] | None = None) -> bool:
    """Does this CPU (or one with these /proc/cpuinfo `flags`) compute in bf16 natively?"""
    if flags is None:

        try:
            flags = cpu_flags()
        except OSError:
            return False
    return any(flag in flags for flag in BF16_FLAGS)


def precisions_for(flags: set[str] | None = None) -> tuple[str, ...]:
    """f32 always (pinned); bf16 beside it only where the CPU has it (elsewhere OpenVINO would emulate it)."""
    return ("f32", "bf16") if bf16_native(flags) else ("f32",)


def is_eligible(measurement: Measurement, max_drop: float, tolerance: float = LOSSLESS_TOLERANCE) -> bool:
    if not measurement.verified and max_drop <= 0:
        return False  # bf16 without labels: lossy until --data shows it within the gate
    return measurement.drop <= max_drop + tolerance and (
        measurement.drop_map is None or measurement.drop_map <= max_drop + GATE_MAP)


def _accuracy_rank(row: Row, tolerance: float = LOSSLESS_TOLERANCE) -> float:
    """Drops within the noise tie (lossless is lossless); beyond it, less lost ranks higher."""
    return 0.0 if is_eligible(row.measurement, 0.0, tolerance) else -row.measurement.drop


def headroom(images_per_s: float, cameras: int | None, interval: float | None) -> dict | None:
    """The load the setting sustains against the load asked (cameras each sending one snapshot per interval)."""
    if not cameras or not interval:
        return None
    asked = cameras / interval
    return {"cameras": cameras, "interval_s": interval, "asked_images_per_s": asked,
            "sustained_images_per_s": images_per_s, "ratio": images_per_s / asked,
            "cameras_sustained": int(images_per_s * interval), "enough": images_per_s >= asked}


def choose(measured: list[tuple[Candidate, Measurement]], budget_ms: float, max_drop: float = 0.0, *,
           cameras: int | None = None, interval: float | None = None,
           tolerance: float = LOSSLESS_TOLERANCE) -> Choice:
    """The eligible row that meets the budget at p95 with the best accuracy, then the most images/s.
    `tolerance`: the drop that is still lossless (the noise without labels; validate's mAP50 gate with)."""
    rows = [Row(c, m, is_eligible(m, max_drop, tolerance), m.p95_ms <= budget_ms) for c, m in measured]
    winners = [r for r in rows if r.eligible and r.meets_budget]
    pick = max(winners, key=lambda r: (_accuracy_rank(r, tolerance), r.measurement.images_per_s,
                                       -r.measurement.p95_ms), default=None)
    choice = Choice(budget_ms, max_drop, rows, pick, tolerance=tolerance)
    if pick is None:
        eligible = sorted((r for r in rows if r.eligible), key=lambda r: r.measurement.p95_ms)
        choice.nearest = [{"label": r.candidate.label, "p95_ms": r.measurement.p95_ms,
                           "over_budget_ms": r.measurement.p95_ms - budget_ms, "drop": r.measurement.drop,
                           "cost": f"{r.measurement.p95_ms - budget_ms:.1f} ms over the budget"}
                          for r in eligible[:NEAREST]]
        lossy = sorted((r for r in rows if not r.eligible and r.meets_budget), key=lambda r: r.measurement.drop)
        choice.nearest += [{"label": r.candidate.label, "p95_ms": r.measurement.p95_ms, "over_budget_ms": 0.0,
                            "drop": r.measurement.drop,
                            "cost": (f"meets the budget at an accuracy drop of {r.measurement.drop:.3f} "
                                     f"(--max-drop {r.measurement.drop:.3f} would allow it)" if r.measurement.verified
                                     else f"meets the budget in {r.candidate.precision}, accuracy not checked on "
                                          f"labels (--data would check it; --max-drop allows it unchecked)")}
                           for r in lossy[:1]]
    elif not is_eligible(pick.measurement, 0.0, tolerance):
        lossless = [r for r in rows if is_eligible(r.measurement, 0.0, tolerance)]
        best = min(lossless, key=lambda r: r.measurement.p95_ms, default=None)
        if best is not None:
            choice.loss_buys = {
                "drop": pick.measurement.drop, "checked": pick.measurement.verified, "lossless": best.candidate.label,
                "lossless_p95_ms": best.measurement.p95_ms, "pick_p95_ms": pick.measurement.p95_ms,
                "p95_speedup": best.measurement.p95_ms / pick.measurement.p95_ms,
                "throughput_gain": pick.measurement.images_per_s / best.measurement.images_per_s,
                "lossless_meets_budget": best.meets_budget}
    if pick is not None:
        choice.headroom = headroom(pick.measurement.images_per_s, cameras, interval)
    return choice


def snapshot_shapes(sizes: list[tuple[int, int]]) -> list[str]:
    """The aspect ratios of the snapshots' (width, height), as `shapes:` writes them (16x9, 4x3...)."""
    from math import gcd

    ratios = []
    for width, height in sizes:
        ratio = f"{width // gcd(width, height)}x{height // gcd(width, height)}"
        if ratio not in ratios:
            ratios.append(ratio)
    return ratios


def config_fragment(choice: Choice, host: str = "", shapes: list[str] | None = None) -> str:
    """A worker.yaml fragment for the pick, commented with what was measured; empty without a pick.
    `shapes`: the snapshots' aspect ratios, warmed at start by a worker serving a dynamic (rect) IR."""
    from worker.config import WorkerConfig

    if choice.pick is None:
        return ""
    c, m = choice.pick.candidate, choice.pick.measurement
    known = {f.name for f in fields(WorkerConfig)}
    lines = [f"# deer-worker tune: budget {choice.budget_ms:g} ms at p95, max accuracy drop {choice.max_drop:g}",
             f"# measured{' on ' + host if host else ''}: p95 {m.p95_ms:.1f} ms, p50 {m.p50_ms:.1f} ms, "
             f"{m.images_per_s:.1f} images/s ({'through the queue' if m.through_queue else 'in process'}), "
             f"accuracy {m.accuracy:.3f} (drop {m.drop:+.3f})",
             f"model: {c.model}", f"precision: {c.precision}", f"threads: {c.threads}",
             f"workers: {c.workers}", f"batch: '{c.batch if c.batch == 1 else 'auto'}'",
             f"reduced_decode: {'true' if c.reduced_decode else 'false'}"]
    if c.shape == "rect" and shapes:
        # a worker that does not know `shapes:` (before rect inputs) gets it as a note, not an unknown key
        lines.append(f"{'' if 'shapes' in known else '# '}shapes: [{', '.join(shapes)}]")
    if choice.headroom:
        h = choice.headroom
        lines.insert(2, f"# load: {h['cameras']} cameras every {h['interval_s']:g} s = "
                        f"{h['asked_images_per_s']:.2f} images/s asked, {h['ratio']:.1f}x headroom")
    return "\n".join(lines) + "\n"


# --- accuracy without labels ----------------------------------------------------------------------
# --- measuring -------------------------------------------------------------------------------------
@dataclass
class InProcess:
    """One model at one thread count and decode setting, batch 1 and (if asked) batch 4."""
    detections: list  # per snapshot, for accuracy
    batch1: tuple[float, float, float]  # p50 ms, p95 ms, images/s of one worker
    batch4: tuple[float, float, float] | None
    limit_ms: float
    precision: str = "f32"  # what the compiled model computes in (the CPU's answer, not the request)


def measure_in_process(model: str, threads: int, reduced: bool, snapshots: list[bytes], seconds: float,
                       batch4: bool, precision: str = "f32") -> InProcess:
    from worker.config import WorkerConfig
    from worker.inference.build import build_detector

    served = WorkerConfig(model=model, threads=threads, precision=precision, reduced_decode=reduced)
    detector = build_detector(served, batch="4" if batch4 else "1")
    detections = [detector.detect(data).detections for data in snapshots]
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < len(snapshots) or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        detector.detect(snapshots[len(times) % len(snapshots)])
        times.append(time.perf_counter() - t0)
    one = (percentile_ms(times, 50), percentile_ms(times, 95), len(times) / sum(times))
    four = None
    if batch4 and detector.max_batch >= 4:
        group = [(snapshots[i % len(snapshots)], None) for i in range(4)]
        batches: list[float] = []
        started = time.perf_counter()
        while len(batches) < 2 or time.perf_counter() - started < seconds / 2:
            t0 = time.perf_counter()
            detector.detect_batch(group)
            batches.append(time.perf_counter() - t0)
        four = (percentile_ms(batches, 50), percentile_ms(batches, 95), 4 * len(batches) / sum(batches))
    from worker.inference.runtime import inference_precision

    shape, runner = _batch1_runner(detector)
    limit = measure_latency(runner, random_input(1, shape), min(seconds, 2.0))["p50_ms"]
    return InProcess(detections, one, four, limit, inference_precision(runner))


def _batch1_runner(detector) -> tuple[tuple[int, int], object]:
    """A batch-1 runner and its input shape (H, W): the first shape warmed for a dynamic model."""
    for key, runner in detector.runners.items():
        shape, batch = key if isinstance(key, tuple) else (detector.spec.imgsz, key)
        if batch == 1:
            return tuple(shape), runner
    raise LookupError("detector has no batch-1 runner")


def measure_through_queue(candidate: Candidate, images: list[Path], seconds: float) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, images/s) of `candidate` served by the worker pool from an embedded Redis queue.

    Latency: one snapshot at a time (a camera's snapshot arriving at an idle worker), from enqueue to its
    result on the results channel, so the queue's own cost is in the figure the budget is checked against.
    Throughput: a backlog of snapshots, completed images per second once the first is done."""
    from worker.config import WorkerConfig, resolve_path
    from worker.jobqueue.connections import connect
    from worker.jobqueue.producer import enqueue_snapshot
    from worker.serve.pool import WorkerPool
    from worker.tools.demo import wait_for_workers
    from worker.tools.embedded import embedded_redis

    config = WorkerConfig(model=candidate.model, threads=candidate.threads, precision=candidate.precision,
                          batch="1" if candidate.batch == 1 else "4", reduced_decode=candidate.reduced_decode,
                          workers=candidate.workers)
    with embedded_redis() as (url, _):
        connection = connect(url)
        pubsub = connection.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(config.results_channel)

        def serve(count: int) -> list[float]:
            """Enqueue `count` snapshots at once; the time each result arrived, in order."""
            pending = {enqueue_snapshot(connection, images[i % len(images)], "tune").id for i in range(count)}
            arrivals, deadline = [], time.monotonic() + max(60.0, 20 * seconds)
            while pending and time.monotonic() < deadline:
                raw = pubsub.get_message(timeout=1.0)
                message = json.loads(raw["data"]) if raw else {}
                if message.get("job_id") in pending:
                    pending.discard(message["job_id"])
                    if message["status"] == "ok":
                        arrivals.append(time.perf_counter())
                        served = tuple(message["model"][k] for k in ("name", "weights", "precision"))
                        if served != (candidate.name, candidate.weights, candidate.precision):
                            raise RuntimeError(f"tune: the queue served {' '.join(served)}, not the candidate "
                                               f"{candidate.label} ({candidate.weights})")
            return arrivals

        # the pool's workers read their settings from the environment: every one the candidate sets
        settings = {"redis_url": url, "metrics_port": 0, "model": str(resolve_path(candidate.model)),
                    "precision": candidate.precision, "batch": config.batch,
                    "reduced_decode": "true" if candidate.reduced_decode else "false"}
        pool = WorkerPool(config, None, settings, candidate.workers, log_level="WARNING")
        pool.start()
        try:
            wait_for_workers(connection, config.queue, pool, candidate.workers, 120.0)
            serve(candidate.workers)  # each worker's first job pays for lazy set-up
            latencies: list[float] = []
            started = time.perf_counter()
            while len(latencies) < max(10, len(images)) or time.perf_counter() - started < seconds:
                t0 = time.perf_counter()
                latencies += [arrival - t0 for arrival in serve(1)]
            arrivals = serve(max(8 * candidate.workers, 4 * len(images)))
        finally:
            pool.stop(config.job_timeout + 10)
            pubsub.close()
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return percentile_ms(latencies, 50), percentile_ms(latencies, 95), rate


def model_facts(model: str) -> dict:
    from worker.config import resolve_path
    from worker.inference.runtime import load_spec

    spec, _ = load_spec(resolve_path(model))
    return {"model": model, "name": spec.name, "weights": spec.weights,
            "dynamic": bool(getattr(spec, "dynamic", False)), "end2end": bool(getattr(spec, "end2end", False))}


def measure_all(models: list[dict], snapshots: list[bytes], *, cores: int, budget_ms: float, max_drop: float,
                seconds: float, batches=(1, 4), max_workers: int | None = None, accuracy_of=None,
                precisions: tuple[str, ...] = ("f32",), tolerance: float = LOSSLESS_TOLERANCE,
                log=print) -> tuple[list, list[str], float]:
    """In-process figures for every candidate that can still win; returns (measured, skipped, decode floor).

    `accuracy_of(model facts, reduced, precision)` -> (accuracy, drop, mAP50-95 drop or None) with labels;
    without, agreement with the reference's detections (the first model, f32, full decode, all cores).
    Order: each model at all cores first (accuracy and its fastest latency); a model outside the accuracy
    gate, or whose p95 at all cores is already over the budget, is not measured at fewer threads (fewer
    threads per worker only make one snapshot slower); reduced decode is measured only where a snapshot
    is large enough for it to change the decode."""
    from worker.inference.imagecodec import choose_reduction, read_header


    floor = measure_decode_floor(snapshots)["p50_ms"]
    skipped: list[str] = []
    measured: list[tuple[Candidate, Measurement]] = []
    reference = None
    splits = worker_splits(cores, max_workers)
    for m in models:
        smallest = 640  # no imgsz below this in practice; read_header is cheap
        reducible = any(choose_reduction(read_header(s), read_header(s).width, read_header(s).height, smallest) > 1
                        for s in snapshots)
        decodes = (False, True) if reducible else (False,)
        if not reducible:
            skipped.append(f"{m['name']}: reduced decode (no snapshot is large enough for it to change anything)")
        for precision in precisions:
            for reduced in decodes:
                what = f"{m['name']} {precision}{' reduced decode' if reduced else ''}"
                for threads in sorted({t for _, t in splits}, reverse=True):
                    log(f"tune: {what} threads {threads}")
                    run = measure_in_process(m["model"], threads, reduced, snapshots, seconds, 4 in batches,
                                             precision)
                    if run.precision != precision:
                        skipped.append(f"{what}: the CPU computes it in {run.precision}, not {precision}")
                        break
                    if reference is None:
                        reference = run.detections
                    if accuracy_of:
                        accuracy, drop, drop_map = accuracy_of(m, reduced, precision)
                    else:
                        accuracy = box_f1(reference, run.detections)
                        drop, drop_map = 1.0 - accuracy, None
                    # bf16 changes the numerics: only labels can show it keeps the accuracy
                    verified = precision == "f32" or accuracy_of is not None
                    for workers, t in splits:
                        if t != threads:
                            continue
                        for batch in batches:
                            figures = run.batch1 if batch == 1 else run.batch4
                            if figures is None:
                                continue
                            p50, p95, per_worker = figures
                            # k workers on k disjoint core sets: k times one worker's rate (re-measured
                            # through the queue for the finalists)
                            measured.append((Candidate(m["model"], m["name"], m["weights"], precision, threads,
                                                       workers, batch, reduced,
                                                       "rect" if m.get("dynamic") else "square"),
                                             Measurement(p50, p95, per_worker * workers, accuracy, drop,
                                                         limit_ms=run.limit_ms, decode_floor_ms=floor,
                                                         drop_map=drop_map, verified=verified)))
                    gated = Measurement(0.0, 0.0, 0.0, accuracy, drop, drop_map=drop_map, verified=verified)
                    if not is_eligible(gated, max_drop, tolerance):
                        reason = (f"accuracy drop {drop:.3f}{'' if drop_map is None else f' (mAP50-95 {drop_map:.3f})'} "
                                  f"is outside the gate {max_drop:g}" if verified
                                  else f"{precision} unchecked without --data is outside the lossless gate")
                        skipped.append(f"{what}: fewer threads ({reason})")
                        break
                    if run.batch1[1] > budget_ms:
                        skipped.append(f"{what}: fewer threads (p95 {run.batch1[1]:.0f} ms at {threads} threads "
                                       "is already over the budget)")
                        break
    return measured, skipped, floor


# --- exports from a .pt ----------------------------------------------------------------------------
def exported_models(weights: Path, imgsizes: list[int], data: str | None, cache: Path,
                    log=print) -> tuple[list[str], dict[str, dict]]:
    """The model folders `deer-worker export` writes from `weights` at each imgsz: dynamic (rect) IRs of
    both heads, FP32, and INT8 with --data (its train split calibrates), and a MODEL_CARD.json, which with
    --data holds the .pt's and every IR's ultralytics val scores (validate's gate). Run as the command
    itself (a child process: torch stays out of the process that measures), kept in `cache` keyed by the
    .pt's and the data yaml's content, so a second run re-uses them.
    -> (IR folders, {IR folder: {"reference", "accuracy", "imgsz", "data", "val_split"}} (scored only with --data))."""
    import hashlib
    import subprocess

    from worker.errors import DeerWorkerError, MissingFileError
    from worker.model.card import CARD_FILE, ModelCard

    if not weights.is_file():
        raise MissingFileError(f"checkpoint {weights} not found: pass the trained ultralytics .pt")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    tag = "nodata"
    if data:
        resolved = Path(data).resolve()
        if not resolved.is_file():
            raise MissingFileError(f"data yaml {data} not found")
        tag = "data-" + hashlib.sha256(str(resolved).encode() + resolved.read_bytes()).hexdigest()[:8]
    models: list[str] = []
    scores: dict[str, dict] = {}
    for imgsz in imgsizes:
        folder = cache / f"{weights.stem}-{digest}" / f"{imgsz}-{tag}"
        card_path = folder / CARD_FILE
        if not card_path.exists():
            log(f"tune: exporting {weights.name} at {imgsz} with deer-worker export (dynamic IRs, both heads, "
                f"FP32{' and INT8, scored against the .pt on ' + data if data else ''}) into {folder}")
            command = [sys.executable, "-m", "worker", "export", str(weights.resolve()), "--imgsz", str(imgsz),
                       "--out", str(folder), "--reuse", "--json"] + (["--int8", "--data", str(data)] if data else [])
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode != 0 or not card_path.exists():
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise DeerWorkerError(f"tune: deer-worker export of {weights.name} at {imgsz} failed: {last}")
        else:
            log(f"tune: re-using the export in {folder}")
        card = ModelCard.read(folder)
        for name, entry in card.irs.items():
            ir = str(folder / name)
            models.append(ir)
            scores[ir] = {"reference": card.reference, "accuracy": entry.get("accuracy"), "imgsz": card.imgsz,
                          "data": data, "val_split": card.val_split or "val"}
    return models, scores


class LabelledAccuracy:
    """mAP50 of each candidate with labels: `accuracy_of(model facts, reduced, precision)` ->
    (mAP50, mAP50 drop, mAP50-95 drop) against the reference.

    With `scores` (from exported_models) the reference is the .pt and each IR is scored as validate gates
    it: ultralytics val of the IR (f32 from the export's card; another precision measured the same way).
    Reduced decode cannot be scored that way (ultralytics decodes at full size): its change on the served
    path (Detector.detect, validate's evaluate_model) is added to the full-decode score.
    Without `scores` (IRs given): the served path, against the first model at f32 with a full decode."""

    def __init__(self, data: str, scores: dict[str, dict] | None = None, reference_model: str | None = None):

        self.data, self.scores, self.reference_model = data, scores or {}, reference_model
        self.spec = load_data_yaml(data)
        self.val = self.spec.images("val")
        self.labels = [read_labels(label_path(i), len(self.spec.names)) for i in self.val]
        self._served: dict = {}
        self._uval: dict = {}

    def served(self, model: str, reduced: bool, precision: str) -> tuple[float, float]:

        key = (model, reduced, precision)
        if key not in self._served:
            metrics = evaluate_model(model, self.val, self.labels, self.spec.names, reduced_decode=reduced,
                                     precision=precision).metrics
            self._served[key] = (metrics.map50, metrics.map50_95)
        return self._served[key]

    def uval(self, model: str, precision: str) -> tuple[float, float]:
        key = (model, precision)
        if key not in self._uval:
            exported = self.scores[model]  # what the export's card recorded of this IR
            if precision == "f32" and exported.get("accuracy"):
                scored = exported["accuracy"]
            else:
                from worker.tools.reference import ultralytics_val

                omp = os.environ.get("OMP_NUM_THREADS")  # ultralytics' import sets it to 1 for the whole process
                try:
                    scored = ultralytics_val(model, self.data, exported["imgsz"], precision=precision,
                                             split=exported["val_split"])
                finally:
                    if omp is None:
                        os.environ.pop("OMP_NUM_THREADS", None)
                    else:
                        os.environ["OMP_NUM_THREADS"] = omp
            self._uval[key] = (scored["mAP50"], scored["mAP50-95"])
        return self._uval[key]

    def __call__(self, m: dict, reduced: bool, precision: str) -> tuple[float, float, float]:
        model = m["model"]
        if model in self.scores:
            ref = self.scores[model]["reference"]
            map50, map5095 = self.uval(model, precision)
            if reduced:
                full, cut = self.served(model, False, precision), self.served(model, True, precision)
                map50, map5095 = map50 + cut[0] - full[0], map5095 + cut[1] - full[1]
            ref50, ref5095 = ref["mAP50"], ref["mAP50-95"]
        else:
            map50, map5095 = self.served(model, reduced, precision)
            ref50, ref5095 = self.served(self.reference_model or model, False, "f32")
        return map50, round(ref50 - map50, 6), round(ref5095 - map5095, 6)


# --- report ----------------------------------------------------------------------------------------
def table(choice: Choice) -> str:
    """One row per candidate, fastest first; bf16 rows apart, after the f32 ones."""
    width = max([52] + [len(r.candidate.label) for r in choice.rows])
    header = (f"{'candidate':<{width}} {'p50 ms':>7} {'p95 ms':>7} {'img/s':>7} {'limit':>6} {'acc':>6} "
              f"{'drop':>6}  verdict")
    lines = [header, "-" * len(header)]
    precision = "f32"
    for r in sorted(choice.rows, key=lambda r: (r.candidate.precision != "f32", r.measurement.p95_ms)):
        m = r.measurement
        if r.candidate.precision != precision:
            precision = r.candidate.precision
            lines.append(f"-- {precision} (this CPU computes it natively; its numerics differ from f32"
                         f"{'' if m.verified else ': lossy unless --data shows it within the gate'}) --")
        verdict = ("PICK" if r is choice.pick else "meets" if r.eligible and r.meets_budget
                   else "over budget" if r.eligible else "accuracy" if m.verified else "unchecked")
        limit = f"{m.limit_ms:6.1f}" if m.limit_ms is not None else f"{'-':>6}"
        queue = "q" if m.through_queue else " "
        lines.append(f"{r.candidate.label:<{width}} {m.p50_ms:7.1f} {m.p95_ms:7.1f} {m.images_per_s:6.1f}{queue} "
                     f"{limit} {m.accuracy:6.3f} {m.drop:+6.3f}  {verdict}")
    return "\n".join(lines)


def summary(choice: Choice) -> list[str]:
    out = []
    if choice.pick:
        m = choice.pick.measurement
        out.append(f"pick: {choice.pick.candidate.label}: p95 {m.p95_ms:.1f} ms <= budget {choice.budget_ms:g} ms "
                   f"(margin {choice.budget_ms - m.p95_ms:.1f} ms), {m.images_per_s:.1f} images/s, "
                   f"accuracy drop {m.drop:+.3f}")
    else:
        out.append(f"none meets the budget of {choice.budget_ms:g} ms at p95 within an accuracy drop of "
                   f"{choice.max_drop:g}; nearest:")
        out += [f"  {n['label']}: p95 {n['p95_ms']:.1f} ms, {n['cost']}" for n in choice.nearest]
    if choice.loss_buys:
        b = choice.loss_buys
        loss = f"{b['drop']:.3f}" if b.get("checked", True) else f"{choice.pick.candidate.precision}, unchecked on labels"
        out.append(f"the allowed loss ({loss}) buys x{b['p95_speedup']:.2f} p95 and x{b['throughput_gain']:.2f} "
                   f"images/s over the best lossless ({b['lossless']}, p95 {b['lossless_p95_ms']:.1f} ms, "
                   f"{'meets' if b['lossless_meets_budget'] else 'misses'} the budget)")
    bf16 = [r for r in choice.rows if r.candidate.precision == "bf16"]
    f32 = [r for r in choice.rows if r.candidate.precision == "f32" and r.eligible]
    if bf16:
        best = min(bf16, key=lambda r: r.measurement.p95_ms)
        line = (f"bf16 (apart): fastest {best.candidate.label} p95 {best.measurement.p95_ms:.1f} ms, "
                + (f"drop {best.measurement.drop:+.3f} ({'within' if best.eligible else 'outside'} the gate)"
                   if best.measurement.verified else "accuracy unchecked without --data (lossy until checked)"))
        if f32:
            fast = min(f32, key=lambda r: r.measurement.p95_ms)
            line += f"; fastest eligible f32 {fast.candidate.label} p95 {fast.measurement.p95_ms:.1f} ms"
        out.append(line)
    if choice.headroom:
        h = choice.headroom
        out.append(f"headroom: sustains {h['sustained_images_per_s']:.1f} images/s vs {h['asked_images_per_s']:.2f} "
                   f"asked ({h['cameras']} cameras every {h['interval_s']:g} s): x{h['ratio']:.1f}, "
                   f"up to {h['cameras_sustained']} cameras" + ("" if h["enough"] else " -- NOT ENOUGH"))
    return out


def plot(choice: Choice, path: str) -> bool:
    """p95 vs accuracy drop per candidate, the budget as a line; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for eligible, colour in ((True, "tab:blue"), (False, "tab:grey")):
        rows = [r for r in choice.rows if r.eligible == eligible]
        ax.scatter([r.measurement.p95_ms for r in rows], [r.measurement.accuracy for r in rows], c=colour,
                   s=[10 + 4 * r.measurement.images_per_s for r in rows], alpha=0.6,
                   label="eligible" if eligible else "outside the accuracy gate")
    if choice.pick:
        m = choice.pick.measurement
        ax.scatter([m.p95_ms], [m.accuracy], marker="*", s=300, c="tab:red", label=f"pick: {choice.pick.candidate.label}")
    ax.axvline(choice.budget_ms, color="tab:red", linestyle="--", label=f"budget {choice.budget_ms:g} ms")
    ax.set_xlabel("p95 ms per snapshot, bytes -> detections (lower is better)")
    ax.set_ylabel("accuracy (higher is better); marker size = images/s")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100, bbox_inches="tight")  # room for the long pick label in the legend
    plt.close(fig)
    return True


# --- the command ----------------------------------------------------------------------------------
def _imgsizes(text: str) -> list[int]:

    values = int_list(text)
    if any(v < 32 or v % 32 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be multiples of 32, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.tools.options import add_images, add_isa, add_output, batch_sizes, count, positive_number

    add_isa(parser, "native", "the setting for the worker on this host, which serves uncapped; avx2 to preview "
                              "an AVX2-only CPU (a proxy: pick its setting on that CPU)")
    add_images(parser, "your snapshots (files or folders; default: the demo samples)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", action="append", metavar="DIR",
                        help="OpenVINO IR directory; repeat for several (the first FP32 one is the accuracy "
                             "reference; default: the demo IRs)")
    source.add_argument("--weights", metavar="MODEL.pt", help="export candidates from this checkpoint (export extra)")
    parser.add_argument("--imgsz", type=_imgsizes, default=[640], help="with --weights: sizes to export (default 640)")
    parser.add_argument("--data", help="ultralytics data yaml: accuracy as mAP50 on its val split (validate's measure)")
    parser.add_argument("--budget-ms", type=positive_number, default=40.0, help="p95 latency per snapshot to meet (default 40)")
    parser.add_argument("--max-drop", type=float, default=0.0,
                        help="accuracy loss allowed vs the reference, as a fraction (default 0: lossless)")
    parser.add_argument("--cameras", type=count, help="cameras to serve (with --interval: headroom)")
    parser.add_argument("--interval", type=positive_number, help="seconds between one camera's snapshots")
    parser.add_argument("--seconds", type=positive_number, default=DEFAULT_SECONDS,
                        help=f"per in-process measurement (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--batch", type=batch_sizes, default=[1, 4], help="batch sizes to try, 1 and/or 4 (default 1,4)")
    parser.add_argument("--max-workers", type=count, help="most worker processes to try (default: one per core)")
    parser.add_argument("--no-queue", action="store_true", help="skip the re-measure of the pick through a queue")
    parser.add_argument("--no-bf16", action="store_true",
                        help="f32 only, also where the CPU has bf16 (default: bf16 candidates beside f32 there)")
    add_output(parser, report=True)
    parser.add_argument("--plot", metavar="FILE.png", help="speed/accuracy plot (needs matplotlib)")
    parser.add_argument("--write-config", metavar="FILE", help="write the pick as a worker.yaml fragment")


def run(args: argparse.Namespace) -> int:
    from worker.config import PROJECT_ROOT, resolve_path
    from worker.errors import UsageError
    from worker.tools.bench import default_models
    from worker.tools.options import expand_images, images_of
    from worker.tools.progress import note

    if args.budget_ms <= 0 or args.max_drop < 0 or args.seconds <= 0:
        raise UsageError("tune: --budget-ms and --seconds must be > 0, --max-drop >= 0")
    if (args.cameras is None) != (args.interval is None):
        raise UsageError("tune: --cameras and --interval go together")
    for path in (args.out, args.plot, args.write_config):
        require_report_folder(path)
    images = expand_images(images_of(args) or [resolve_path(SAMPLES)])
    snapshots = [p.read_bytes() for p in images]
    host = host_line(speed_index())  # the host as the run starts
    scores, export_s = None, None
    if args.weights:
        exporting = time.monotonic()
        models, scores = exported_models(Path(args.weights), args.imgsz, args.data, PROJECT_ROOT / ".cache" / "tune",
                                         note)
        export_s = round(time.monotonic() - exporting, 1)  # minutes on a first run, ~0 from the cache
        note(f"tune: {len(models)} IRs from {Path(args.weights).name} in {export_s:.0f} s")
    else:
        models = args.model or default_models()
    started = time.monotonic()
    facts = [model_facts(m) for m in models]
    # the reference (first FP32) leads; from a .pt, its own default head (raw: one-to-many + NMS) first
    facts.sort(key=lambda f: (f["weights"] != "fp32", bool(args.weights) and f.get("end2end", False)))
    cores = len(os.sched_getaffinity(0))
    precisions = ("f32",) if args.no_bf16 else precisions_for()
    accuracy_of = LabelledAccuracy(args.data, scores, facts[0]["model"]) if args.data else None
    tolerance = GATE_MAP50 if args.data else LOSSLESS_TOLERANCE
    measured, skipped, floor = measure_all(facts, snapshots, cores=cores, budget_ms=args.budget_ms,
                                           max_drop=args.max_drop, seconds=args.seconds, batches=tuple(args.batch),
                                           max_workers=args.max_workers, accuracy_of=accuracy_of,
                                           precisions=precisions, tolerance=tolerance, log=note)
    choice = choose(measured, args.budget_ms, args.max_drop, cameras=args.cameras, interval=args.interval,
                    tolerance=tolerance)
    # The pick's figures are re-measured through the real queue; if they no longer win, the next pick is.
    for _ in range(0 if args.no_queue else QUEUE_ROUNDS):
        if choice.pick is None or choice.pick.measurement.through_queue:
            break
        row = choice.pick
        note(f"tune: through the queue: {row.candidate.label}")
        p50, p95, rate = measure_through_queue(row.candidate, images, args.seconds)
        queued = replace(row.measurement, p50_ms=p50, p95_ms=p95, images_per_s=rate, through_queue=True)
        measured = [(c, queued if c == row.candidate else m) for c, m in measured]
        choice = choose(measured, args.budget_ms, args.max_drop, cameras=args.cameras, interval=args.interval,
                        tolerance=tolerance)

    human = table_stream(args.json)
    accuracy_kind = ((f"mAP50 on --data vs the .pt (ultralytics val, validate's gate: mAP50 drop <= {GATE_MAP50:g}, "
                      f"mAP50-95 drop <= {GATE_MAP:g})" if scores else
                      f"mAP50 on --data vs the first FP32 model (served path; lossless: drop <= {GATE_MAP50:g})")
                     if args.data else f"agreement with the reference's detections (lossless: drop <= {LOSSLESS_TOLERANCE:g})")
    if host:
        print(host, file=human)
        if proxy_note():  # capped: every figure below is a proxy
            print(proxy_note(), file=human)
    measure_s = round(time.monotonic() - started, 1)
    print(f"tune: {len(snapshots)} snapshots, {cores} cores, {len(measured)} candidates measured in "
          f"{measure_s:.0f} s; decode floor {floor:.1f} ms (plain full decode, median)", file=human)
    print(table(choice), file=human)
    print("p95/p50: per snapshot, bytes -> detections; img/s: all workers (q = through the queue); "
          "limit: inference alone (benchmark_app's latency loop); acc: " + accuracy_kind, file=human)
    for line in skipped:
        print(f"skipped: {line}", file=human)
    for line in summary(choice):
        print(line, file=human)
    from worker.inference.imagecodec import read_header

    headers = [read_header(s) for s in snapshots]
    fragment = config_fragment(choice, host, snapshot_shapes([(h.width, h.height) for h in headers]))
    if args.write_config:
        if fragment:
            write_report(args.write_config, fragment)
            print(f"config fragment written to {args.write_config}", file=human)
        else:
            print("no pick: --write-config not written", file=human)
    if args.plot:
        print(f"plot written to {args.plot}" if plot(choice, args.plot)
              else "matplotlib is not installed: --plot skipped", file=human)
    report = {"host": host, "snapshots": len(snapshots), "cores": cores, "decode_floor_ms": floor,
              "export_s": export_s, "candidates": len(measured), "measure_s": measure_s,
              "accuracy": accuracy_kind, "precisions": list(precisions), "skipped": skipped, **choice.as_dict(),
              "config_fragment": fragment}
    emit_report(report, as_json=args.json, out=args.out)
    return 0 if choice.pick else 1
