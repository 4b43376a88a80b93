"""The target ISA a measurement runs with: `native` (whatever this CPU has) or a cap on oneDNN's kernels
(`avx2`, the user's i7-4790; `avx`, below any host we run on, so a test of the mechanism bites on AVX2-only
hosts too; SSE4.1 would be lower still, but openvino 2026.4's compile_model fails under it, "bad combination").

oneDNN (the convolutions, nearly all of YOLO's time) reads ONEDNN_MAX_CPU_ISA once, at its first dispatch,
so a cap is only real in a process that started with it: a command asked for a cap it does not have
re-runs itself once as a child with the cap (run_capped). OpenVINO's own JIT kernels stay uncapped, and
where its cap and oneDNN's disagree it has computed wrong results (openvino PR 38189): probe() checks, in
short separate children (oneDNN's verbose output slows timed runs), that the cap took and that capped FP32
outputs equal uncapped ones. A capped figure is a proxy for an AVX2-only CPU: its ratios, not its
milliseconds (Python, decode and Redis still run at this CPU's speed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from worker.errors import ConfigError

ENV = "DEER_WORKER_ISA"  # the default target of every measuring command; a --isa flag beats it
ONEDNN_ENV = "ONEDNN_MAX_CPU_ISA"  # what oneDNN itself reads
CHILD_ENV = "DEER_WORKER_ISA_CHILD"  # set in a re-run child: it never re-runs itself again
PROBE_ENV = "DEER_WORKER_ISA_PROBE"  # the parent's probe, summarized for the child's proxy note
NATIVE = "native"
CAPS = {"avx2": "AVX2", "avx": "AVX"}  # our name -> oneDNN's value
NAMES = (NATIVE, *CAPS)
CLI_NAMES = (NATIVE, "avx2")  # what the commands offer; avx only checks the mechanism (tests, the env var)
# oneDNN's verbose header `isa:<label>` under each cap, and kernel-name parts a capped process must not use.
_LABELS = {"AVX2": "Intel AVX2", "AVX": "Intel AVX"}
_ABOVE = {"AVX2": ("avx512", "amx", "avx10"), "AVX": ("avx2", "avx512", "amx", "avx10")}
PROBE_MODEL = "models/demo/deer-yolo26n_openvino_model"  # a small FP32 IR: the probe checks the mechanism
PROBE_TOLERANCE = 1e-3  # relative to the output's largest value: float noise between kernels, not a change


def check_name(name: str, where: str = ENV) -> str:
    if name not in NAMES:
        raise ConfigError(f"{where}={name!r} is not one of {', '.join(NAMES)}")
    return name


def resolve(flag: str | None, default: str) -> str:
    """The target: the flag, else $DEER_WORKER_ISA, else the command's default."""
    if flag:
        return check_name(flag, "--isa")
    env = os.environ.get(ENV, "").strip().lower()
    return check_name(env) if env else default


def cap_environment(isa: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with oneDNN capped to `isa` (or uncapped for native), marked as a child."""
    env = dict(os.environ if base is None else base)
    env.pop(ONEDNN_ENV, None)
    env.pop("ONEDNN_VERBOSE", None)  # it slows every primitive: never in a measuring child
    if isa != NATIVE:
        env[ONEDNN_ENV] = CAPS[check_name(isa)]
    env[ENV] = isa
    env[CHILD_ENV] = "1"
    return env


def start_environment() -> dict[str, str]:
    """The environment this process started with (Linux: /proc/self/environ): a cap set later, after
    OpenVINO may have dispatched, does not count."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def process_cap() -> str:
    """The cap this process runs with: `native`, one of CAPS, or oneDNN's raw value set by someone else."""
    value = start_environment().get(ONEDNN_ENV, "").strip().upper()
    if not value or value in ("ALL", "DEFAULT"):
        return NATIVE
    return next((name for name, onednn in CAPS.items() if onednn == value), value.lower())


def needs_rerun(isa: str) -> bool:
    return process_cap() != isa


def run_capped(command: list[str], isa: str, probed: ProbeResult | None = None) -> int:
    """Run `command` (this same command, e.g. [sys.executable, "-m", "worker", *argv]) in a child with the
    cap; its stdout/stderr are this process's. -> its exit code. A child that still lacks the cap (something
    strips the variable) is an error, never another re-run."""
    if os.environ.get(CHILD_ENV):
        raise ConfigError(f"asked for --isa {isa} in a process re-run for it, which runs with {process_cap()}: "
                          f"something between them drops {ONEDNN_ENV}")
    env = cap_environment(isa)
    if probed is not None:  # the child's proxy note says what the probe found
        env[PROBE_ENV] = probed.summary()
    return subprocess.run(command, env=env).returncode


def proxy_note() -> str:
    """The note beside a capped figure; empty when the process runs native."""
    cap = process_cap()
    if cap == NATIVE:
        return ""
    probed = os.environ.get(PROBE_ENV)
    return (f"isa cap {cap}: {CAPS.get(cap, cap).upper()} kernels via {ONEDNN_ENV}, a proxy for a CPU without "
            "more: compare ratios, not milliseconds (OpenVINO's own kernels, Python and decode stay native)"
            + (f"; probe: {probed}" if probed else "; not probed"))


@dataclass
class ProbeResult:
    isa: str
    reported: str  # oneDNN's verbose `isa:` header in the capped child
    kernels: list[str] = field(default_factory=list)  # the capped child's convolution implementations
    max_abs_diff: float | None = None  # capped vs uncapped FP32 output, over the largest |value|
    scale: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        diff = "?" if self.max_abs_diff is None else f"{self.max_abs_diff:.1e}"
        return f"oneDNN isa:{self.reported or '?'}, capped vs uncapped FP32 max |diff| {diff}"

    def line(self) -> str:
        diff = "no comparison" if self.max_abs_diff is None else \
            f"FP32 output max |diff| {self.max_abs_diff:.2e} of {self.scale:.3g} vs uncapped"
        kernels = ", ".join(self.kernels[:4]) + (" ..." if len(self.kernels) > 4 else "")
        head = f"isa probe {self.isa}: oneDNN reports isa:{self.reported or '?'}; convolutions {kernels or '?'}; {diff}"
        return head + ("" if self.ok else " -- NOT OK: " + "; ".join(self.problems))


def _verbose(stderr_and_out: str) -> tuple[str, list[str]]:
    """oneDNN's verbose output -> (its `isa:` header, sorted convolution implementation names)."""
    reported, kernels = "", set()
    for line in stderr_and_out.splitlines():
        parts = line.split(",")
        if not line.startswith("onednn_verbose"):
            continue
        for part in parts:
            if part.startswith("isa:") and not reported:
                reported = part[4:]
        if len(parts) > 6 and parts[2].startswith("primitive") and parts[5] == "convolution":
            kernels.add(parts[6])
    return reported, sorted(kernels)


def _child(isa: str, model: Path, out: Path, verbose: bool) -> subprocess.CompletedProcess:
    env = cap_environment(isa)
    env.pop(CHILD_ENV)
    if verbose:
        # profile_create: the header and each primitive's implementation. Not `1`: with openvino 2026.4
        # exec profiling makes compile_model fail ("bad combination").
        env["ONEDNN_VERBOSE"] = "profile_create"
    else:
        env.pop("ONEDNN_VERBOSE", None)
    return subprocess.run([sys.executable, "-m", "worker.evaluation.isa", str(model), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)


def probe(isa: str, model: str | Path = PROBE_MODEL) -> ProbeResult:
    """Two short children, one capped with oneDNN's verbose output and one uncapped: did the cap take (the
    header names it, no convolution uses a kernel above it), and does one FP32 inference give the same
    output within float noise (PROBE_TOLERANCE of its largest value)?"""
    import numpy as np

    from worker.config import resolve_path

    path = resolve_path(str(model))
    xml = path if path.suffix == ".xml" else next(iter(sorted(path.glob("*.xml"))), path / "missing.xml")
    onednn = CAPS[check_name(isa)] if isa != NATIVE else ""
    if not xml.is_file():
        return ProbeResult(isa, "", problems=[f"no FP32 IR to probe with at {path}: restore {PROBE_MODEL}, or "
                                              "measure with --isa native"])
    with tempfile.TemporaryDirectory(prefix="deer-isa-probe-") as tmp:
        capped, native = Path(tmp, "capped.npy"), Path(tmp, "native.npy")
        run = _child(isa, xml, capped, verbose=True)
        reported, kernels = _verbose(run.stdout + run.stderr)
        result = ProbeResult(isa, reported, kernels)
        if run.returncode != 0:
            tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            result.problems.append(f"the capped child failed ({tail})")
            return result
        if onednn and reported != _LABELS[onednn]:
            result.problems.append(f"oneDNN reports {reported or 'no isa'}, not {_LABELS[onednn]}: the cap did not take")
        above = [k for k in kernels if onednn and any(part in k for part in _ABOVE[onednn])]
        if above:
            result.problems.append(f"convolutions above the cap: {', '.join(above)}")
        ref = _child(NATIVE, xml, native, verbose=False)
        if ref.returncode != 0:
            result.problems.append("the uncapped child failed: " + (ref.stderr.strip().splitlines() or ["?"])[-1])
            return result
        a, b = np.load(capped), np.load(native)
        if a.shape != b.shape:
            result.problems.append(f"output shapes differ: {a.shape} capped vs {b.shape}")
            return result
        result.scale = float(max(np.abs(b).max(), 1e-6))
        result.max_abs_diff = float(np.abs(a - b).max())
        if result.max_abs_diff > PROBE_TOLERANCE * result.scale:
            result.problems.append(f"capped FP32 output differs from uncapped by {result.max_abs_diff:.3g} "
                                   f"(> {PROBE_TOLERANCE:g} x {result.scale:.3g}): do not trust capped figures")
    return result


def _infer_once(xml: str, out: str) -> None:
    """The probe child: one FP32 inference on a fixed input, every output flattened into `out` (.npy)."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    model = core.read_model(xml)
    shape = [d.get_length() if d.is_static else (1 if i == 0 else 3 if i == 1 else 320)
             for i, d in enumerate(model.inputs[0].partial_shape)]
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    # A smooth, seeded input: a random-noise image gives near-tied scores whose order float noise may swap.
    h, w = shape[2], shape[3]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([0.5 + 0.4 * np.sin(xx / 17 + c) * np.cos(yy / 23 - c) for c in range(shape[1])])
    outputs = compiled(image[None].astype(np.float32))
    np.save(out, np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in outputs.values()]))


if __name__ == "__main__":
    _infer_once(sys.argv[1], sys.argv[2])
