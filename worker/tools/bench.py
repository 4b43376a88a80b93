"""`deer-worker bench`: how fast is a model on this host, raw and as served?

For each model x precision x threads x batch:
- latency: compiled exactly as the worker compiles it (runtime.compile_model: latency hint, one
  stream), one infer request looping on a pre-filled tensor for --seconds, as `benchmark_app -hint
  latency` does; p50/p95/p99 and FPS;
- throughput: the same graph with the throughput hint and OpenVINO's optimal number of async infer
  requests (ov.AsyncInferQueue), as `benchmark_app -hint throughput`: the host's FPS ceiling;
- service (batch 1): Detector.detect on real snapshots, i.e. decode + preprocess + infer + postprocess.
Then FP32 vs INT8 speedups, batch 4 vs batch 1 images/s, and the process RSS (VmRSS, peak VmHWM).
Timings on a shared host are noisy: compare figures from the same run, not across runs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from worker.evaluation.host import host_line
from worker.evaluation.isa import proxy_note
from worker.evaluation.reports import emit_report, require_report_folder, table_stream
from worker.evaluation.timing import latency_summary, measure_decode_floor, measure_latency, random_input

DEMO_MODELS = ("models/demo/deer-yolo26n_openvino_model", "models/demo/deer-yolo26n_int8_openvino_model")
SAMPLES = "models/demo/samples"


# --- measurements ---------------------------------------------------------------------------------
def memory_mb(status: Path = Path("/proc/self/status")) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of this process in MiB; empty where /proc is not available."""
    out = {}
    try:
        for line in status.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def measure_throughput(compiled, tensor: np.ndarray, seconds: float) -> dict[str, float]:
    """OpenVINO's optimal number of async requests kept busy for `seconds`: the FPS ceiling."""
    import openvino as ov

    requests = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
    queue = ov.AsyncInferQueue(compiled, requests)
    data = {0: tensor}
    for _ in range(requests):  # warm-up, one per request
        queue.start_async(data, share_inputs=True)
    queue.wait_all()
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or count == 0:
        queue.start_async(data, share_inputs=True)  # blocks until a request is free
        count += 1
    queue.wait_all()
    elapsed = time.perf_counter() - started
    return {"fps": count / elapsed, "images_per_s": count * tensor.shape[0] / elapsed, "requests": requests,
            "streams": int(compiled.get_property("NUM_STREAMS")), "iterations": count}


def measure_service(detector, snapshots: list[bytes], seconds: float) -> dict[str, float]:
    """Detector.detect over the snapshots, round-robin, for `seconds` (at least one pass)."""
    for data in snapshots[:2]:
        detector.detect(data)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < len(snapshots) or time.perf_counter() - started < seconds:
        result = detector.detect(snapshots[len(times) % len(snapshots)])
        times.append(result.timings.total)
    stats = latency_summary(times)
    return {"p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "mean_ms": stats["mean_ms"],
            "images": len(snapshots), "iterations": len(times)}


# --- one model ------------------------------------------------------------------------------------
@dataclass
class Config:
    precision: str
    threads: int
    batch: int


@dataclass
class Result:
    model: str
    name: str
    weights: str
    config: Config
    runs: str  # the precision OpenVINO actually uses for non-quantized ops
    latency: dict
    throughput: dict
    service: dict | None
    memory_mb: dict = field(default_factory=dict)
    shape: list[int] = field(default_factory=list)  # (H, W) of the raw latency/throughput input

    def as_dict(self) -> dict:
        return {"model": self.model, "name": self.name, "weights": self.weights, "precision": self.config.precision,
                "shape": self.shape,
                "runs": self.runs, "threads": self.config.threads, "batch": self.config.batch,
                "latency": self.latency, "throughput": self.throughput, "service": self.service,
                "memory_mb": self.memory_mb}


def raw_input_shape(spec) -> tuple[int, int]:
    """The input the raw latency and throughput run at: a dynamic IR at the rect shape the worker gives a
    16:9 snapshot (the user's cameras; 384x640 at imgsz 640), a static IR at its own (square) shape."""
    from worker.inference.preprocess import input_shape

    return input_shape(1080, 1920, max(spec.imgsz)) if spec.dynamic else tuple(spec.imgsz)


def bench_model(model: str | Path, configs: list[Config], snapshots: list[bytes], seconds: float,
                log=print) -> list[Result]:
    import openvino as ov

    from worker.config import WorkerConfig, resolve_path
    from worker.inference.build import build_detector, compile_options
    from worker.inference.runtime import compile_model, inference_precision, load_spec

    path = resolve_path(model)
    spec, ov_model = load_spec(path)
    results = []
    for cfg in configs:
        served = WorkerConfig(model=str(path), threads=cfg.threads, precision=cfg.precision, batch="1")
        options = compile_options(served)
        shape = raw_input_shape(spec)
        tensor = random_input(cfg.batch, shape)
        log(f"  {spec.name} {cfg.precision} threads={cfg.threads} batch={cfg.batch} {shape[0]}x{shape[1]}: latency")
        runner = compile_model(ov_model, spec, cfg.batch, options, ov.Core(), shape=shape)
        runs = inference_precision(runner)
        latency = measure_latency(runner, tensor, seconds)
        del runner
        log(f"  {spec.name} {cfg.precision} threads={cfg.threads} batch={cfg.batch}: throughput")
        throughput_runner = compile_model(ov_model, spec, cfg.batch, replace(options, hint="THROUGHPUT"), ov.Core(),
                                          shape=shape)
        throughput = measure_throughput(throughput_runner.compiled, tensor, seconds)
        del throughput_runner
        service = None
        if cfg.batch == 1 and snapshots:
            log(f"  {spec.name} {cfg.precision} threads={cfg.threads}: service time on {len(snapshots)} snapshots")
            detector = build_detector(served)
            service = measure_service(detector, snapshots, seconds)
            del detector
        results.append(Result(str(model), spec.name, spec.weights, cfg, runs, latency, throughput, service,
                              memory_mb(), list(shape)))
    return results


# --- summaries ------------------------------------------------------------------------------------
def _base_name(name: str) -> str:
    """deer-yolo26n_int8 -> deer-yolo26n, and deer-yolo26n_dynamic_raw_fp32 / _int8 -> deer-yolo26n_dynamic_raw
    (export's naming): an INT8 model is compared with its own FP32 original only."""
    for tag in ("_int8", "-int8", "_fp32", "-fp32"):
        name = name.replace(tag, "")
    return name


def speedups(results: list[Result]) -> list[dict]:
    """INT8 vs its FP32 model at the same precision, threads and batch (ratio of p50 and of FPS)."""
    out = []
    for fp32 in (r for r in results if r.weights == "fp32"):
        for int8 in (r for r in results if r.weights == "int8"):
            if (_base_name(fp32.name), fp32.config.precision, fp32.config.threads, fp32.config.batch) != (
                    _base_name(int8.name), int8.config.precision, int8.config.threads, int8.config.batch):
                continue
            out.append({"fp32": fp32.name, "int8": int8.name, "precision": fp32.config.precision,
                        "threads": fp32.config.threads, "batch": fp32.config.batch,
                        "latency_speedup": fp32.latency["p50_ms"] / int8.latency["p50_ms"],
                        "throughput_speedup": int8.throughput["fps"] / fp32.throughput["fps"]})
    return out


def batch_gains(results: list[Result]) -> list[dict]:
    """Images/s at batch 4 over batch 1, same model, precision and threads (latency-hint loop)."""
    out = []
    for b1 in (r for r in results if r.config.batch == 1):
        for b4 in (r for r in results if r.config.batch == 4):
            if (b1.model, b1.config.precision, b1.config.threads) == (b4.model, b4.config.precision, b4.config.threads):
                out.append({"model": b1.name, "precision": b1.config.precision, "threads": b1.config.threads,
                            "batch1_images_per_s": b1.latency["images_per_s"],
                            "batch4_images_per_s": b4.latency["images_per_s"],
                            "gain": b4.latency["images_per_s"] / b1.latency["images_per_s"]})
    return out


def table(results: list[Result]) -> str:
    header = (f"{'model':<28} {'weights':<7} {'prec':<12} {'thr':>3} {'batch':>5} {'input':>7} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'p99 ms':>7} {'FPS':>7} {'img/s':>7} {'tput img/s':>10} {'svc p50':>8} {'svc p95':>8} {'RSS MB':>7}")
    lines = [header, "-" * len(header)]
    for r in results:
        lat, svc = r.latency, r.service
        prec = r.config.precision if r.config.precision == r.runs else f"{r.config.precision}>{r.runs}"
        svc_cols = f"{svc['p50_ms']:>8.1f} {svc['p95_ms']:>8.1f}" if svc else f"{'-':>8} {'-':>8}"
        lines.append(f"{r.name[:28]:<28} {r.weights:<7} {prec:<12} {r.config.threads or 'all':>3} {r.config.batch:>5} "
                     f"{'x'.join(map(str, r.shape)):>7} {lat['p50_ms']:>7.1f} {lat['p95_ms']:>7.1f} {lat['p99_ms']:>7.1f} {lat['fps']:>7.1f} "
                     f"{lat['images_per_s']:>7.1f} {r.throughput['images_per_s']:>10.1f} {svc_cols} "
                     f"{r.memory_mb.get('rss', 0):>7.0f}")
    return "\n".join(lines)


def plot(results: list[Result], path: str) -> bool:
    """Bar chart of p50 latency and throughput per configuration; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r.name}\n{r.runs} threads {r.config.threads or 'all'}\nbatch {r.config.batch}" for r in results]
    x = np.arange(len(results))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results) * 2), 4.5))
    ax1.bar(x - 0.2, [r.latency["p50_ms"] for r in results], 0.4, label="inference p50")
    ax1.bar(x + 0.2, [r.service["p50_ms"] if r.service else 0 for r in results], 0.4, label="service p50")
    ax1.set_ylabel("ms per call (lower is better)")
    ax2.bar(x - 0.2, [r.latency["images_per_s"] for r in results], 0.4, label="latency hint")
    ax2.bar(x + 0.2, [r.throughput["images_per_s"] for r in results], 0.4, label="throughput hint")
    ax2.set_ylabel("images/s (higher is better)")
    for ax in (ax1, ax2):
        ax.set_xticks(x, labels, fontsize=7)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --- the command ----------------------------------------------------------------------------------
def _precision_list(text: str) -> list[str]:
    from worker.constants import PRECISIONS

    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in PRECISIONS]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"precisions are {', '.join(PRECISIONS)}; got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.tools.options import add_images, add_isa, add_output, batch_sizes, int_list, positive_number

    add_isa(parser, "native", "this host as the worker serves on it (it never caps itself); avx2 for the INT8/FP32 "
                              "ratio an AVX2-only CPU would see")
    add_images(parser, "snapshots (files or folders) for the service-time run (default: the demo samples)",
               legacy="--images")
    parser.add_argument("--model", action="append",
                        help="OpenVINO IR directory or .xml; repeat for several (default: the demo FP32 and INT8)")
    parser.add_argument("--threads", type=int_list, default=[0], help="comma list, 0 = all cores (default 0)")
    parser.add_argument("--batch", type=batch_sizes, default=[1, 4],
                        help="comma list of static batch sizes (default 1,4)")
    parser.add_argument("--precision", type=_precision_list, default=["f32"],
                        help="comma list of f32, bf16, f16, default (default f32, as served)")
    parser.add_argument("--seconds", type=positive_number, default=10.0, help="per measurement (default 10)")
    add_output(parser, report=True)
    parser.add_argument("--plot", metavar="FILE.png", help="bar chart (needs matplotlib)")


def default_models() -> list[str]:
    from worker.config import resolve_path
    from worker.errors import ConfigError

    models = [m for m in DEMO_MODELS if resolve_path(m).exists()]
    if not models:
        raise ConfigError(f"no --model given and no demo model in {', '.join(DEMO_MODELS)}")
    return models


def _snapshots(images: list[str]) -> list[bytes]:
    from worker.config import resolve_path
    from worker.tools.options import expand_images

    return [p.read_bytes() for p in expand_images(images or [resolve_path(SAMPLES)])]


def run(args: argparse.Namespace) -> int:
    import openvino as ov

    from worker.errors import UsageError
    from worker.tools.options import images_of
    from worker.tools.progress import note

    host = host_line()  # as the run starts: CPU, ISA and load decide every figure below
    if any(b < 1 for b in args.batch):
        raise UsageError("bench: --batch sizes must be >= 1")
    require_report_folder(args.out)
    models = args.model or default_models()
    snapshots = _snapshots(images_of(args))  # a missing image fails here, before minutes of measuring
    configs = [Config(p, t, b) for p in args.precision for t in args.threads for b in args.batch]
    baseline = memory_mb()
    per_model = 2 * len(configs) + sum(c.batch == 1 for c in configs)  # measurements of one model
    note(f"bench: {len(models)} models x {len(configs)} configs, "
                  f"~{len(models) * per_model * args.seconds:.0f} s of measurement; "
                  f"{len(snapshots)} snapshots for service time")
    results: list[Result] = []
    for model in models:
        results += bench_model(model, configs, snapshots, args.seconds, note)
    memory = {"baseline": baseline.get("rss"), **memory_mb()}
    floor = measure_decode_floor(snapshots) if snapshots else None

    human = table_stream(args.json)
    print(host, file=human)
    if proxy_note():  # capped: every figure below is a proxy
        print(proxy_note(), file=human)
    print(table(results), file=human)
    print("latency: one request, latency hint (as served); tput: throughput hint, "
          f"{results[0].throughput['requests']} async requests; svc: Detector.detect incl. decode/pre/postprocess",
          file=human)
    if floor:
        print(f"decode floor: {floor['p50_ms']:.1f} ms p50, {floor['p95_ms']:.1f} ms p95 (plain full decode of the same "
              "snapshots, this process): svc minus inference minus this is the service's own overhead", file=human)
    for s in speedups(results):
        print(f"INT8 speedup ({s['int8']} vs {s['fp32']}, {s['precision']}, threads {s['threads'] or 'all'}, "
              f"batch {s['batch']}): latency x{s['latency_speedup']:.2f}, throughput x{s['throughput_speedup']:.2f}",
              file=human)
    for g in batch_gains(results):
        print(f"batch 4 vs 1 ({g['model']}, {g['precision']}, threads {g['threads'] or 'all'}): "
              f"{g['batch4_images_per_s']:.1f} vs {g['batch1_images_per_s']:.1f} images/s, x{g['gain']:.2f}",
              file=human)
    print(f"memory: RSS {memory.get('rss')} MiB now, peak {memory.get('peak')} MiB "
          f"(baseline before loading models {memory.get('baseline')} MiB; all models share this process)", file=human)
    if args.plot:
        if plot(results, args.plot):
            print(f"plot written to {args.plot}", file=human)
        else:
            print("matplotlib is not installed: --plot skipped (pip install matplotlib)", file=human)
    report = {"host": host, "openvino": ov.get_version(), "seconds": args.seconds, "snapshots": len(snapshots),
              "results": [r.as_dict() for r in results], "speedups": speedups(results),
              "batch_gains": batch_gains(results), "memory_mb": memory, "decode_floor": floor}
    emit_report(report, as_json=args.json, out=args.out)
    return 0
