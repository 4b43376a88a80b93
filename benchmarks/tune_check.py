#!/usr/bin/env python3
"""Issue-18 benchmark (not a test): does the setting `deer-worker tune` chose meet the budget when measured
again, apart from the run that chose it, with the margin the tool stated?

    .venv/bin/python -m worker.cli tune ... --out tune.json
    .venv/bin/python benchmarks/tune_check.py tune.json [--rounds 3] [--seconds 5] [--out FILE]

Each round starts a fresh embedded Redis and worker pool at the pick's settings (tune's own queue
measure: one snapshot at a time, enqueue to result, then a backlog for images/s) on the same snapshots
(the demo samples unless --images). Prints one JSON report: the budget, the stated p95 and margin, each
round's p95, and whether every round met the budget. Run it on an otherwise quiet host: the figures
are this host's, in this run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.inference.build import tune_process  # noqa: E402
from worker.evaluation.host import host_line, speed_index  # noqa: E402
from worker.tools.options import expand_images  # noqa: E402
from worker.tools.tune import SAMPLES, Candidate, measure_through_queue  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", help="tune's JSON report (tune --out FILE)")
    ap.add_argument("--images", nargs="+", default=[str(ROOT / SAMPLES)], help="snapshots (default: the demo samples)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh pools measured (default 3)")
    ap.add_argument("--seconds", type=float, default=5.0, help="latency measurement per round (default 5)")
    ap.add_argument("--out", help="also write the JSON report here")
    args = ap.parse_args()
    tune_process()
    host = host_line(speed_index())  # as the run starts
    report = json.loads(Path(args.report).read_text())
    pick = report.get("pick")
    if not pick:
        print(json.dumps({"error": "the tune report has no pick (none met the budget)"}))
        return 2
    candidate = Candidate(**{k: pick[k] for k in Candidate.__dataclass_fields__})
    images = expand_images(args.images)
    budget, stated = report["budget_ms"], pick["p95_ms"]
    rounds = []
    for i in range(args.rounds):
        p50, p95, rate = measure_through_queue(candidate, images, args.seconds)
        rounds.append({"p50_ms": round(p50, 2), "p95_ms": round(p95, 2), "images_per_s": round(rate, 2)})
        print(f"round {i + 1}: p95 {p95:.1f} ms (budget {budget:g}, stated {stated:.1f}), {rate:.1f} images/s",
              file=sys.stderr)
    worst = max(r["p95_ms"] for r in rounds)
    result = {"host": host, "tune_host": report.get("host"), "pick": candidate.label, "budget_ms": budget,
              "stated_p95_ms": stated, "stated_margin_ms": round(budget - stated, 2), "rounds": rounds,
              "worst_p95_ms": worst, "worst_margin_ms": round(budget - worst, 2), "meets_budget": worst <= budget}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result["meets_budget"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
