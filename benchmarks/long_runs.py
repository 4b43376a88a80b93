#!/usr/bin/env python3
"""The long reliability runs, one after another, in one command (issue 20): worker kills (chaos), Redis
restarts (SIGKILL, then SIGTERM), bad inputs, the soak, a cut-off worker host (partition) and the
Sentinel failovers (primary killed, primary's box cut off). Each run is its script in benchmarks/
reliability or benchmarks/multihost as a subprocess with its own JSON report and log; this writes ONE
dated summary: host line, git commit (and whether the tree is dirty), and per run the exact command,
start/end, wall seconds, exit status, verdict (the script's own checks: exit 0 passed, 1 failed) and
the script's JSON report embedded. A run that crashes or hangs does not stop the others.

    .venv/bin/python benchmarks/long_runs.py [--only NAME ...] [--quick] [--soak-minutes 30]
        [--kills 50] [--restarts 20] [--bad-inputs 5000] [--partition-rounds 10] [--failovers 10]
        [--out long-runs-<UTC timestamp>.json]

The defaults are README's long settings: about 55 min on the 2-core dev host with the 30-minute soak
(the script prints its estimate first, from the times measured there on 2026-11-30). --quick uses tiny
ones for a smoke run (~5 min; its soak is too short for its p99 check to mean anything). partition and
failover build network namespaces: they need root and `ip`. Each run's report and log go next to the
summary, in <summary stem>/.
Exit status 0 when every chosen run passed its checks, 1 otherwise, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from a clone without installing

from worker.evaluation.host import host_line, speed_index  # noqa: E402

LONG = {"kills": 50, "restarts": 20, "bad_inputs": 5000, "soak_minutes": 30.0, "partition_rounds": 10,
        "failovers": 10}
QUICK = {"kills": 2, "restarts": 2, "bad_inputs": 200, "soak_minutes": 1.5, "partition_rounds": 1, "failovers": 1}
QUICK_SOAK = ["--warmup", "20", "--window", "30", "--median-of", "3"]  # two 30 s windows in a 90 s soak
MIN_TIMEOUT_S = 600.0  # a run's timeout: --timeout-factor x its estimate, never less than this
STOP_GRACE_S = 30  # a run past its timeout gets SIGTERM (the lab scripts tear their namespaces down), then SIGKILL


@dataclass(frozen=True)
class Run:
    name: str
    script: str  # relative to the repository root
    args: Callable[[dict], list[str]]  # settings -> the script's arguments (its report path added after)
    report_flag: str  # the script's option that writes its JSON report
    estimate_s: Callable[[dict], float]  # from README's and the scripts' documented times, start-up included


def _soak_args(s: dict) -> list[str]:
    return ["--minutes", f"{s['soak_minutes']:g}", *(QUICK_SOAK if s["quick"] else [])]


RUNS = [
    Run("chaos", "benchmarks/reliability/chaos.py", lambda s: ["--kills", str(s["kills"])], "--json",
        lambda s: 30 + 6 * s["kills"]),  # 286-293 s for 50 kills
    Run("redis_restart_sigkill", "benchmarks/reliability/redis_restart.py",
        lambda s: ["--restarts", str(s["restarts"]), "--how", "sigkill"], "--json",
        lambda s: 12 + 12 * s["restarts"]),  # Redis down ~1.1 s every ~12 s
    Run("redis_restart_sigterm", "benchmarks/reliability/redis_restart.py",
        lambda s: ["--restarts", str(s["restarts"]), "--how", "sigterm"], "--json",
        lambda s: 12 + 12 * s["restarts"]),
    Run("bad_inputs", "benchmarks/reliability/bad_inputs.py", lambda s: ["--n", str(s["bad_inputs"])], "--json",
        lambda s: 10 + 0.018 * s["bad_inputs"]),  # 5000 jobs in 43.9 s on a quiet host, twice that on a busy one
    Run("soak", "benchmarks/reliability/soak.py", _soak_args, "--json",
        lambda s: 90 + 60 * s["soak_minutes"]),  # capacity 15 s, the soak, the drain
    Run("partition", "benchmarks/multihost/partition.py", lambda s: ["--rounds", str(s["partition_rounds"])], "--out",
        lambda s: 17 * s["partition_rounds"]),  # a lab, two model loads, the cut, the bound, the settle
    Run("failover_kill", "benchmarks/multihost/failover.py",
        lambda s: ["--fault", "kill", "--failovers", str(s["failovers"]), "--workers", "2"], "--out",
        lambda s: 10 + 11 * s["failovers"]),
    Run("failover_cut", "benchmarks/multihost/failover.py",
        lambda s: ["--fault", "cut", "--failovers", str(s["failovers"]), "--workers", "2"], "--out",
        lambda s: 10 + 24 * s["failovers"]),  # the cut lasts until the demotion, ~10 s after it heals
]
GROUPS = {"redis_restart": ["redis_restart_sigkill", "redis_restart_sigterm"],
          "failover": ["failover_kill", "failover_cut"]}


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_at_start() -> str:
    """The host line with its speed index (~5 s of benchmark_app): how fast this host was as the runs began."""
    return host_line(speed_index())


def git_state() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                            cwd=ROOT).stdout
    changed = [line[3:] for line in status.splitlines()]
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed), "changed_paths": changed,
            "worker_code_dirty": any(p.startswith("worker/") for p in changed)}


def _stop(proc: subprocess.Popen) -> None:
    """End the run's whole process group: SIGTERM first (the lab scripts remove their namespaces on it)."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_one(run: Run, settings: dict, outdir: Path, timeout: float) -> dict:
    """Run one script to its end (or its timeout); its verdict is its own exit status: 0 passed its
    checks, 1 failed them. No report written means it crashed, whatever its status."""
    report_path, log_path = outdir / f"{run.name}.json", outdir / f"{run.name}.log"
    report_path.unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / run.script), *run.args(settings), run.report_flag, str(report_path)]
    started = time.time()
    timed_out = False
    with log_path.open("w") as log:
        try:
            proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            return {"name": run.name, "command": command, "started_at": utc(started), "ended_at": utc(time.time()),
                    "wall_s": 0.0, "exit_code": None, "status": "crashed", "why": f"could not start: {exc}",
                    "report_path": None, "log_path": str(log_path), "report": None}
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
            code = proc.returncode
        except BaseException:  # Ctrl-C: take the run's processes (pools, redis-servers, labs) down too
            _stop(proc)
            raise
    ended = time.time()
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        report = None
    if timed_out:
        status, why = "crashed", f"still running after its {timeout:.0f} s timeout: stopped"
    elif report is None:
        status, why = "crashed", f"exit {code} and no JSON report: see the log"
    elif code == 0:
        status, why = "passed", "the script's own checks passed (exit 0)"
    elif code == 1:  # each script lists the checks that failed in its report
        status, why = "failed", "; ".join(report.get("failed_checks") or ["the script's own checks failed (exit 1)"])
    else:
        status, why = "crashed", f"exit {code}"
    return {"name": run.name, "command": command, "started_at": utc(started), "ended_at": utc(ended),
            "wall_s": round(ended - started, 1), "exit_code": code, "status": status, "why": why,
            "report_path": str(report_path) if report is not None else None, "log_path": str(log_path),
            "report": report}


def run_all(runs: list[Run], settings: dict, out: Path, command: list[str], *, timeout_factor: float = 3.0,
            min_timeout: float = MIN_TIMEOUT_S, host: Callable[[], str] = host_at_start,
            started: float | None = None) -> dict:
    """Every run in turn; the summary is rewritten after each (a long session cut short keeps what ended)."""
    outdir = out.with_suffix("")
    outdir.mkdir(parents=True, exist_ok=True)
    started = started or time.time()
    line = host()
    print(line, flush=True)
    summary = {"what": "the long reliability runs, one after another (benchmarks/long_runs.py)",
               "command": command, "started_at": utc(started), "ended_at": None,
               "wall_s": None, "complete": False, "host": line, "host_at_end": None,
               "git": git_state(), "settings": settings, "runs": [], "passed": None, "not_passed": []}
    for run in runs:
        estimate = run.estimate_s(settings)
        print(f"[{utc(time.time())}] {run.name}: starting (estimated {estimate / 60:.1f} min)", file=sys.stderr,
              flush=True)
        result = run_one(run, settings, outdir, max(min_timeout, timeout_factor * estimate))
        summary["runs"].append(result)
        print(f"[{result['ended_at']}] {run.name}: {result['status']} in {result['wall_s']:.0f} s "
              f"(exit {result['exit_code']}); {result['why']}", file=sys.stderr, flush=True)
        _write(out, summary)
    ended = time.time()
    summary["host_at_end"] = host_line()  # the load as the runs ended
    summary.update(ended_at=utc(ended), wall_s=round(ended - started, 1), complete=True,
                   not_passed=[r["name"] for r in summary["runs"] if r["status"] != "passed"])
    summary["passed"] = not summary["not_passed"]
    _write(out, summary)
    return summary


def _write(out: Path, summary: dict) -> None:
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out)


def _interrupted(signum, frame):
    raise KeyboardInterrupt


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"long_runs: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    names = [r.name for r in RUNS]
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", metavar="NAME", choices=names + sorted(GROUPS),
                   help=f"run only these, in the usual order: {', '.join(names)}; or {', '.join(sorted(GROUPS))} "
                        "for both of a kind")
    p.add_argument("--quick", action="store_true", help=f"tiny settings for a smoke run: {QUICK}")
    p.add_argument("--kills", type=int, help=f"chaos: workers SIGKILLed (default {LONG['kills']})")
    p.add_argument("--restarts", type=int, help=f"redis_restart: restarts of each kind (default {LONG['restarts']})")
    p.add_argument("--bad-inputs", type=int, help=f"bad_inputs: generated jobs (default {LONG['bad_inputs']})")
    p.add_argument("--soak-minutes", type=float, help=f"soak: minutes at 80%% of capacity (default "
                                                       f"{LONG['soak_minutes']:g})")
    p.add_argument("--partition-rounds", type=int, help=f"partition: cut-offs (default {LONG['partition_rounds']})")
    p.add_argument("--failovers", type=int, help=f"failover: failovers of each fault (default {LONG['failovers']})")
    p.add_argument("--timeout-factor", type=float, default=3.0,
                   help=f"a run still going after this many times its estimate (at least {MIN_TIMEOUT_S:.0f} s) "
                        "is stopped")
    p.add_argument("--out", type=Path, help="the summary (default long-runs-<UTC timestamp>.json here); each "
                                            "run's report and log go in a directory of the same stem")
    args = p.parse_args(argv)
    for key in LONG:
        value = getattr(args, key)
        if value is not None and value <= 0:
            p.error(f"--{key.replace('_', '-')} must be > 0, not {value:g}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.time()
    base = QUICK if args.quick else LONG
    settings = {key: getattr(args, key) if getattr(args, key) is not None else base[key] for key in LONG}
    settings["quick"] = args.quick
    chosen = {n for name in args.only for n in GROUPS.get(name, [name])} if args.only else None
    runs = [r for r in RUNS if chosen is None or r.name in chosen]
    out = args.out or Path(f"long-runs-{datetime.fromtimestamp(started, timezone.utc):%Y%m%dT%H%M%SZ}.json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write(out, {"started_at": utc(started), "complete": False})
    except OSError as exc:
        print(f"long_runs: cannot write the summary {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    total = sum(r.estimate_s(settings) for r in runs)
    print(f"long_runs: {', '.join(r.name for r in runs)}; estimated {total / 60:.0f} min; summary {out}",
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupted)  # as Ctrl-C: the running script's processes are stopped too
    command = [sys.executable, str(Path(__file__).resolve()), *(sys.argv[1:] if argv is None else argv)]
    try:
        summary = run_all(runs, settings, out, command, timeout_factor=args.timeout_factor, started=started)
    except KeyboardInterrupt:
        print(f"long_runs: interrupted; {out} holds the runs that ended", file=sys.stderr)
        return 130
    for r in summary["runs"]:
        print(f"{r['name']:<24} {r['status']:<8} {r['wall_s']:>7.0f} s  exit {r['exit_code']}")
    verdict = "all passed" if summary["passed"] else "NOT passed: " + ", ".join(summary["not_passed"])
    print(f"summary: {out} ({verdict})")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
