"""What host a figure was measured on: the CPU, the ISA flags that decide INT8 and bf16 speed, cores, load,
and optionally a speed index. Every benchmark, report and tool prints `host_line()` beside its figures."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from worker.evaluation.isa import NATIVE, process_cap

CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo(path: Path = CPUINFO) -> list[dict[str, str]]:
    """/proc/cpuinfo -> one dict per logical CPU."""
    cpus, current = [], {}
    for line in path.read_text().splitlines():
        if not line.strip():
            if current:
                cpus.append(current)
            current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        cpus.append(current)
    return cpus


def cpu_flags(path: Path = CPUINFO) -> set[str]:
    """The first logical CPU's /proc/cpuinfo flags (an OSError where there is no such file)."""
    cpus = read_cpuinfo(path)
    return set(cpus[0].get("flags", "").split()) if cpus else set()


# The flags that decide INT8 / bf16 speed, in the order the host line names them.
HOST_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
_SPEED_INDEX_MODEL = "models/demo/deer-yolo26n_openvino_model"


def host_line(speed: str = "", path: Path = CPUINFO) -> str:
    """The line to put beside every figure: CPU model, the ISA flags above, usable cores, 1-min load, an
    optional speed index, `isa cap: avx2` when oneDNN runs capped, UTC time. AVX2-only and AVX-512 VNNI hosts both occur and differ ~2x in INT8,
    so a figure without this line cannot be compared. Same format as the dev host's host-fingerprint."""
    try:
        cpus = read_cpuinfo(path)
    except OSError:
        cpus = []
    name = cpus[0].get("model name", "unknown CPU") if cpus else "unknown CPU"
    flags = set(cpus[0].get("flags", "").split()) if cpus else set()
    isa = " ".join(f for f in HOST_ISA_FLAGS if f in flags) or "no avx2"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    fields = [f"host: {name}", isa, f"{cores} cores", f"load {os.getloadavg()[0]:.2f}"]
    cap = process_cap()
    if cap != NATIVE:  # oneDNN capped below this CPU: the figures beside this line are a proxy
        fields.append(f"isa cap: {cap}")
    return " | ".join([*fields, *([speed] if speed else []), time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())])


def speed_index(model: str = _SPEED_INDEX_MODEL, seconds: int = 5) -> str:
    """benchmark_app's latency median of an FP32 IR, f32 pinned, for host_line: how fast this host is
    right now (this shared host's speed moves several-fold within a day). Costs `seconds`."""
    import re
    import subprocess

    from worker.config import resolve_path

    tool = Path(sys.executable).parent / "benchmark_app"
    xml = next(iter(sorted(resolve_path(model).glob("*.xml"))), None)
    if not tool.exists() or xml is None:
        return "no speed index (no benchmark_app or no model)"
    try:
        out = subprocess.run([str(tool), "-m", str(xml), "-d", "CPU", "-hint", "latency", "-infer_precision", "f32",
                              "-t", str(seconds)], capture_output=True, text=True, timeout=60 + seconds).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    found = re.findall(r"Median:\s+([\d.]+) ms", out)
    return (f"speed index {found[-1] if found else '?'} ms ({xml.parent.name}, f32, benchmark_app latency median)")
