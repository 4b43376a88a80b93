"""Exit stress: every way a `deer-worker run` process ends gives the documented status, never a signal.

Two kinds of exit, many times each, optionally beside a CPU hog (busy loops on every core) that widens
the races between the main thread's shutdown and the threads still running:
  burst    `run --burst` against a Redis nobody listens on: it loads the model, waits burst_redis_wait s
           and must exit 2 with its one `redis_unavailable` line;
  sigterm  `run` against a private redis-server fed with snapshot jobs, SIGTERMed at a random moment
           between --earliest s after its spawn (imports, model load, warm-up) and a few seconds into
           serving (mid-batch, idle): it must exit 0. The report counts the signals that reached a process
           with no SIGTERM handler yet (the code installs one as its first step).
Counted for each: exit statuses, deaths by signal, "terminate called" (std::terminate) on stderr, and
Python tracebacks. Exit 0 of this script only when every exit was the documented one.

    .venv/bin/python benchmarks/exit_stress.py --burst 200 --sigterm 200 --hog --json
    .venv/bin/python benchmarks/exit_stress.py --burst 50 --tree /tmp/old-checkout   # older code: does it abort?

--tree runs the worker from another checkout (PYTHONPATH), e.g. a commit before the ordered shutdown; for
code older than the burst_redis_wait setting the wait is set on the module (BURST_REDIS_WAIT).
Run it alone on the host: it is a stress check, and its wall time is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from reliability.harness import Producer, RedisServer, free_port, sample_images  # noqa: E402
from worker.evaluation.host import host_line  # noqa: E402
from worker.serve.stopping import catches_sigterm  # noqa: E402

MODEL = ROOT / "models" / "demo" / "deer-yolo26n_openvino_model"
# Code without the burst_redis_wait setting: the module constant it used, set before main() runs.
_OLD_WAIT = ("import sys, worker.serve.service as s; s.BURST_REDIS_WAIT = float(sys.argv.pop(1)); "
             "from worker.cli import main; sys.exit(main())")


def _env(tree: Path, wait: float) -> dict[str, str]:
    env = dict(os.environ, DEER_WORKER_METRICS_PORT="0", DEER_WORKER_BURST_REDIS_WAIT=str(wait),
               PYTHONPATH=str(tree), YOLO_OFFLINE="1")
    env.pop("DEER_WORKER_CONFIG", None)
    return env


def _command(tree: Path, wait: float, args: list[str]) -> list[str]:
    service = (tree / "worker" / "serve" / "service.py").read_text()
    if "BURST_REDIS_WAIT = " in service:  # older code: the wait is a module constant
        return [sys.executable, "-c", _OLD_WAIT, str(wait), *args]
    return [sys.executable, "-m", "worker", *args]


class Tally:
    def __init__(self) -> None:
        self.codes: Counter = Counter()
        self.aborts = 0  # "terminate called" on stderr (std::terminate)
        self.tracebacks = 0
        self.examples: list[str] = []

    def add(self, code: int, stderr: str, expected: int) -> None:
        self.codes[code] += 1
        aborted = "terminate called" in stderr
        self.aborts += aborted
        self.tracebacks += "Traceback" in stderr
        if (code != expected or aborted) and len(self.examples) < 5:
            self.examples.append(f"exit {code}: ..." + stderr[-600:])

    def bad(self, expected: int) -> int:
        return sum(n for code, n in self.codes.items() if code != expected) + self.aborts

    def report(self, expected: int) -> dict:
        return {"runs": sum(self.codes.values()), "expected_status": expected,
                "statuses": {str(k): v for k, v in sorted(self.codes.items())},
                "signals": sum(n for code, n in self.codes.items() if code < 0),
                "terminate_called": self.aborts, "tracebacks": self.tracebacks, "unexpected": self.bad(expected),
                "examples": self.examples}


def burst_exits(n: int, tree: Path, wait: float, workdir: Path) -> Tally:
    """Every other run starts on an empty compiled-model cache (a fresh machine: compile, write the cache)."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    tally = Tally()
    cmd = _command(tree, wait, ["run", "--burst", "--redis", dead, "--model", str(MODEL), "--log-level", "WARNING"])
    for i in range(n):
        env = dict(_env(tree, wait), DEER_WORKER_CACHE_DIR=str(workdir / ("cache" if i % 2 else f"cold-{i}")))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        tally.add(out.returncode, out.stderr, 2)
        print(f"burst {i + 1}/{n}: exit {out.returncode}", file=sys.stderr, flush=True)
    return tally


def sigterm_exits(n: int, tree: Path, earliest: float, latest: float, workdir: Path) -> tuple[Tally, int]:
    """-> the tally, and how many signals reached a process that had no SIGTERM handler yet."""
    tally, unhandled = Tally(), 0
    rng = random.Random(7)
    with RedisServer(workdir) as server:
        url = server.url()
        producer = Producer(url, rate=10.0, images=sample_images(), queue="exit-stress", queued_ttl=30)
        producer.start()
        cmd = _command(tree, 10.0, ["run", "--redis", url, "--queue", "exit-stress", "--model", str(MODEL),
                                    "--log-level", "WARNING"])
        try:
            for i in range(n):
                delay = rng.uniform(earliest, latest)
                proc = subprocess.Popen(cmd, env=_env(tree, 10.0), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, cwd=ROOT)
                reader = threading.Thread(target=lambda p=proc: setattr(p, "err_text", p.stderr.read()))
                reader.start()
                time.sleep(delay)
                unhandled += not catches_sigterm(proc.pid)
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                reader.join()
                tally.add(code, getattr(proc, "err_text", ""), 0)
                print(f"sigterm {i + 1}/{n} at {delay:.2f} s: exit {code}", file=sys.stderr, flush=True)
        finally:
            producer.stop()
    return tally, unhandled


def _hog(stop: multiprocessing.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=200, help="run --burst exits with Redis down")
    parser.add_argument("--sigterm", type=int, default=200, help="workers SIGTERMed at a random moment")
    parser.add_argument("--wait", type=float, default=0.5, help="burst_redis_wait for the burst exits (s)")
    parser.add_argument("--earliest", type=float, default=0.3,
                        help="SIGTERM moments are drawn from this many s after the spawn (the interpreter's own "
                             "start, before any line of ours, ends by the signal whatever the code does)")
    parser.add_argument("--latest", type=float, default=8.0, help="... to this many s after it")
    parser.add_argument("--hog", action="store_true", help="a busy loop on every core beside the workers")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose worker runs (PYTHONPATH)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    host = host_line()
    print(host, file=sys.stderr)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=_hog, args=(stop,), daemon=True) for _ in range(os.cpu_count() or 1)] \
        if args.hog else []
    for hog in hogs:
        hog.start()
    started = time.time()
    try:
        with tempfile.TemporaryDirectory(prefix="exit-stress-") as tmp:
            burst = burst_exits(args.burst, args.tree.resolve(), args.wait, Path(tmp))
            sigterm, unhandled = sigterm_exits(args.sigterm, args.tree.resolve(), args.earliest, args.latest, Path(tmp))
            report = {"host": host, "tree": str(args.tree), "hog": args.hog, "wait_s": args.wait,
                      "burst": burst.report(2),
                      "sigterm": {**sigterm.report(0), "signals_before_a_handler": unhandled,
                                  "moments_s": [args.earliest, args.latest]}}
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    report["wall_s"] = round(time.time() - started, 1)
    bad = report["burst"]["unexpected"] + report["sigterm"]["unexpected"]
    for kind in ("burst", "sigterm"):
        r = report[kind]
        print(f"{kind}: {r['runs']} exits, statuses {r['statuses']}, signals {r['signals']}, terminate called "
              f"{r['terminate_called']}, tracebacks {r['tracebacks']}, unexpected {r['unexpected']}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
