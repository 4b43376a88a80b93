"""`deer-worker doctor`: is this host ready to serve? One line per finding, OK / WARN / FAIL, with advice.

Checks the CPU (the instruction sets OpenVINO's fast kernels need), cores and CPU quota, the frequency
governor, OpenVINO and the precision the CPU would pick, the configs, the model (load, compile, one
inference on a sample) and Redis. Exit status 1 when anything FAILs, so it can gate a deployment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from worker.config import redact_url as _redact
from worker.evaluation.host import CPUINFO, read_cpuinfo

OK, WARN, FAIL = "OK", "WARN", "FAIL"
REDIS_TIMEOUT = 2.0  # seconds; a reachable Redis answers in milliseconds
_CPU_SYSFS = Path("/sys/devices/system/cpu")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_SAMPLES = "models/demo/samples"
# Measured on an AVX2-only host (docs: ANCHORS.md, 1.8-1.9x) and in OpenVINO's published INT8-vs-FP32
# tables (1.5-2.1x without VNNI, 2.4-4.4x with it): what a user without VNNI can expect from INT8.
INT8_WITHOUT_VNNI = ("no VNNI: expect INT8 ~1.5-2x faster than f32 here (2.5-4x needs VNNI), so a smaller "
                     "input or model may be needed for a tight budget; `deer-worker tune --budget-ms N` "
                     "measures which setting meets it on this host without losing accuracy")


@dataclass(frozen=True)
class Finding:
    status: str  # OK | WARN | FAIL
    check: str
    detail: str
    advice: str = ""


# --- host -----------------------------------------------------------------------------------------
def check_cpu(path: Path = CPUINFO) -> Finding:
    try:
        cpus = read_cpuinfo(path)
    except OSError as exc:
        return Finding(WARN, "cpu", f"cannot read {path} ({exc.strerror})", "run doctor on the Linux host itself")
    if not cpus:
        return Finding(WARN, "cpu", f"{path} lists no CPUs", "run doctor on the Linux host itself")
    flags = set(cpus[0].get("flags", "").split())
    vnni = [name for flag, name in (("avx512_vnni", "AVX512_VNNI"), ("avx_vnni", "AVX_VNNI")) if flag in flags]
    amx = [f for f in ("amx_tile", "amx_bf16", "amx_int8") if f in flags]
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    detail = (f"{cpus[0].get('model name', 'unknown CPU')}: AVX2 {yes('avx2' in flags)}, "
              f"AVX-512F {yes('avx512f' in flags)}, VNNI {'/'.join(vnni) or 'no'}, "
              f"AVX512_BF16 {yes('avx512_bf16' in flags)}, AMX {'/'.join(amx) or 'no'}")
    if "avx2" not in flags:
        return Finding(WARN, "cpu", detail, "no AVX2: OpenVINO falls back to SSE4.2 kernels, expect several times "
                                            "slower inference; use a newer host")
    if not vnni:
        return Finding(OK, "cpu", detail, INT8_WITHOUT_VNNI)
    return Finding(OK, "cpu", detail)


def _cpu_quota(path: Path = _CGROUP_CPU_MAX) -> float | None:
    """CPUs this cgroup may use (cgroup v2 cpu.max), None when unlimited or not exposed."""
    try:
        parts = path.read_text().split()  # "max 100000" (no limit) or "150000 100000" (1.5 CPUs)
        return None if len(parts) < 2 or parts[0] == "max" else int(parts[0]) / int(parts[1])
    except (OSError, ValueError):
        return None


def check_cores(cpuinfo: Path = CPUINFO, cpu_max: Path = _CGROUP_CPU_MAX) -> Finding:
    try:
        cpus = read_cpuinfo(cpuinfo)
    except OSError:
        cpus = []
    threads = len(cpus) or os.cpu_count() or 1
    pairs = {(c.get("physical id"), c.get("core id")) for c in cpus if "core id" in c}
    physical = len(pairs) or threads
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
    quota = _cpu_quota(cpu_max)
    detail = f"{physical} physical cores, {threads} threads, {usable} usable by this process"
    if quota is not None:
        detail += f", cgroup quota {quota:g} CPUs"
        if quota < min(usable, physical):
            return Finding(WARN, "cores", detail,
                           f"OpenVINO sizes its thread pool from the visible cores, not the quota: set threads: "
                           f"{max(1, int(quota))} in worker.yaml (or raise the container's CPU limit)")
    if threads > physical:
        return Finding(OK, "cores", detail, "SMT on: OpenVINO uses one thread per physical core by default (keep it)")
    return Finding(OK, "cores", detail)


def check_load(cores: int | None = None) -> Finding:
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load1, load5, _ = os.getloadavg()
    detail = f"load average {load1:.2f} (1 min), {load5:.2f} (5 min) on {cores} CPUs"
    if load1 > 0.75 * cores:
        return Finding(WARN, "load", detail, "other processes are using the CPU: latency will be higher and "
                                             "benchmarks noisy; find them with `top`")
    return Finding(OK, "load", detail)


def check_governor(root: Path = _CPU_SYSFS) -> Finding:
    files = sorted(root.glob("cpu[0-9]*/cpufreq/scaling_governor"))
    if not files:
        return Finding(OK, "governor", "CPU frequency scaling not exposed (VM)")
    governors: dict[str, int] = {}
    for f in files:
        try:
            name = f.read_text().strip()
        except OSError:
            continue
        governors[name] = governors.get(name, 0) + 1
    detail = ", ".join(f"{name} on {n} CPUs" for name, n in sorted(governors.items()))
    if "powersave" in governors:
        return Finding(WARN, "governor", detail, "powersave clocks down between snapshots and adds latency: "
                                                 "`sudo cpupower frequency-set -g performance`")
    return Finding(OK, "governor", detail)


# --- OpenVINO -------------------------------------------------------------------------------------
def check_openvino() -> tuple[Finding, str | None]:
    """-> (finding, the CPU's default inference precision or None when OpenVINO is unusable)."""
    try:
        import openvino as ov

        core = ov.Core()
        devices = core.available_devices
        version = ov.get_version()
    except Exception as exc:  # an import or plugin failure is exactly what doctor is for
        return Finding(FAIL, "openvino", f"OpenVINO unusable ({type(exc).__name__}: {exc})",
                       "reinstall: pip install 'openvino>=2026,<2027'"), None
    detail = f"{version}, devices {', '.join(devices) or 'none'}"
    if "CPU" not in devices:
        return Finding(FAIL, "openvino", detail, "the CPU plugin is missing: reinstall the openvino wheel"), None
    return Finding(OK, "openvino", detail), core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()


def precision_finding(cpu_default: str, configured: str | None = None) -> Finding:
    detail = f"CPU default inference precision {cpu_default}"
    if configured:
        detail += f"; worker.yaml precision: {configured}"
    if cpu_default == "bf16":
        pinned = configured not in (None, "default", "bf16")
        advice = ("FP32 models silently run in bf16 here unless pinned (~2x faster, activations rounded to "
                  "bf16); " + ("the worker pins it, so results match f32 hosts"
                                   if pinned else "set precision: f32, or keep bf16 only if "
                                                  "`deer-worker validate --precision bf16` shows no mAP drop"))
        return Finding(WARN, "precision", detail, advice)
    return Finding(OK, "precision", detail)


# --- configs, model, Redis --------------------------------------------------------------------------
def check_configs(config_path: str | None):
    """-> (findings, WorkerConfig (defaults when the file is bad), CameraBook | None)."""
    from worker.cameras import load_camera_book
    from worker.config import DEFAULT_CONFIG, default_config_path, load_config, resolve_path
    from worker.errors import ConfigError

    findings = []
    config_path = default_config_path(config_path)
    try:
        config = load_config(config_path)
        source = str(resolve_path(config_path)) if config_path else f"built-in defaults (no {DEFAULT_CONFIG})"
        findings.append(Finding(OK, "config", f"{source} valid"))
    except ConfigError as exc:
        findings.append(Finding(FAIL, "config", str(exc), "fix the named key; the worker refuses to start with it"))
        config = load_config(None)
    book = None
    try:
        zones = config.resolve(config.zones)
        book = load_camera_book(zones)
        findings.append(Finding(OK, "zones", f"{zones} valid, {len(book.cameras)} cameras"))
    except ConfigError as exc:
        findings.append(Finding(FAIL, "zones", str(exc), "fix the named camera setting"))
    cache = Path(config.cache_dir).expanduser()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not os.access(cache, os.W_OK):
            raise PermissionError(f"{cache} is not writable")
    except OSError as exc:
        findings.append(Finding(WARN, "cache", f"model cache {cache} unusable ({exc})",
                                "every start recompiles the model: point cache_dir at a writable directory"))
    return findings, config, book


def _sample_image(image: str | None) -> tuple[str, bytes]:
    from worker.config import resolve_path

    if image:
        return image, Path(image).read_bytes()
    samples = sorted(resolve_path(_SAMPLES).glob("*.jpg"))
    if samples:
        return str(samples[0]), samples[0].read_bytes()
    import cv2
    import numpy as np

    grey = np.full((360, 640, 3), 114, np.uint8)  # no sample shipped: a grey frame still exercises the path
    return "synthetic 640x360 grey JPEG", cv2.imencode(".jpg", grey)[1].tobytes()


def check_model(model: str, config, book, image: str | None = None) -> Finding:
    from worker.config import resolve_path
    from worker.errors import DeerWorkerError
    from worker.inference.build import build_detector

    path = resolve_path(model)
    try:
        started = time.perf_counter()
        detector = build_detector(config, model=path, batch="1")
        load_s = time.perf_counter() - started
        name, data = _sample_image(image)
        result = detector.detect(data, book.default if book else None)
        if book is not None:
            detector.check_cameras(book)
    except (DeerWorkerError, OSError, RuntimeError) as exc:
        detail = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        return Finding(FAIL, "model", detail, "export the model with `yolo export format=openvino` "
                                                        "or point model: / --model at an IR directory")
    spec = detector.spec
    return Finding(OK, "model", (
        f"{path}: {spec.name} ({spec.weights} weights, {'end2end' if spec.end2end else 'raw head + NMS'}, "
        f"{spec.imgsz[1]}x{spec.imgsz[0]}, classes {', '.join(spec.names[:5])}{'...' if len(spec.names) > 5 else ''}) "
        f"loaded+compiled+warmed in {load_s:.1f} s, runs {detector.precision}; {Path(name).name}: "
        f"infer {result.timings.infer * 1e3:.1f} ms, total {result.timings.total * 1e3:.1f} ms, "
        f"{len(result.detections)} detections"))


def check_redis(url: str) -> Finding:
    import redis

    from worker.jobqueue.connections import connect

    try:
        client = connect(url, timeout=REDIS_TIMEOUT, command_timeout=REDIS_TIMEOUT)  # Sentinel URLs too
        server = client.info("server")
        policy = client.info("memory").get("maxmemory_policy", "unknown")
    except (redis.RedisError, OSError, ValueError) as exc:
        return Finding(FAIL, "redis", f"{_redact(url)}: {type(exc).__name__}: {exc}",
                       "start Redis or fix redis_url / --redis (password, host, port, db)")
    detail = f"{_redact(url)}: Redis {server.get('redis_version', '?')}, maxmemory-policy {policy}"
    if policy not in ("noeviction", "unknown"):
        return Finding(WARN, "redis", detail, "under memory pressure Redis evicts queued jobs and results: "
                                              "`CONFIG SET maxmemory-policy noeviction`")
    return Finding(OK, "redis", detail)


# --- the command ----------------------------------------------------------------------------------
def diagnose(config_path: str | None = None, model: str | None = None, redis_url: str | None = None,
             image: str | None = None) -> list[Finding]:
    findings = [check_cpu(), check_cores(), check_load(), check_governor()]
    openvino_finding, cpu_precision = check_openvino()
    config_findings, config, book = check_configs(config_path)
    findings.append(openvino_finding)
    if cpu_precision is not None:
        findings.append(precision_finding(cpu_precision, config.precision))
    findings += config_findings
    if cpu_precision is not None:
        findings.append(check_model(model or config.model, config, book, image))
    findings.append(check_redis(redis_url or config.redis_url))
    return findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from worker.config import DEFAULT_CONFIG
    from worker.tools.options import add_images, add_output

    add_images(parser, "snapshot for the test inference (default: a shipped sample)", legacy="--image", single=True)
    parser.add_argument("--config", help=f"worker.yaml (default {DEFAULT_CONFIG} when present)")
    parser.add_argument("--model", help="model to load (default: the config's model)")
    parser.add_argument("--redis", help="Redis URL (default: the config's redis_url)")
    add_output(parser)


def run(args: argparse.Namespace) -> int:
    from worker.errors import UsageError
    from worker.tools.options import images_of, require_files

    images = images_of(args)
    if len(images) > 1:
        raise UsageError(f"doctor runs one test inference; got {len(images)} images")
    require_files(images, "doctor image")  # a typo is the user's, not a model failure
    findings = diagnose(args.config, args.model, args.redis, images[0] if images else None)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{f.status:<4}  {f.check:<9}  {f.detail}")
            if f.advice:
                print(f"{'':<4}  {'':<9}  -> {f.advice}")
        counts = {s: sum(f.status == s for f in findings) for s in (OK, WARN, FAIL)}
        print(f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failures", file=sys.stdout)
    return 1 if any(f.status == FAIL for f in findings) else 0
