"""The deliberate breaks tests/reliability/test_long_runs.py catches (benchmarks/long_runs.py: each run's
verdict, the rest going on after a crash), run with run.py's machinery; seconds each:

    .venv/bin/python tests/mutations/long_runs_breaks.py [--only NAME] [--list] [--no-baseline]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

LONG_RUNS = "benchmarks/long_runs.py"
VERDICTS = ("tests/reliability/test_long_runs.py::"
            "test_each_run_gets_its_own_verdict_and_a_crash_or_a_hang_does_not_stop_the_rest")

LONG_RUNS_BREAKS = [
    Break("long-runs-failed-checks-pass", LONG_RUNS,
          "    elif code == 0:", "    elif code in (0, 1):",
          VERDICTS, "a script that exits 1 (its own checks failed) is summed up as passed"),
    Break("long-runs-no-report-is-not-a-crash", LONG_RUNS,
          "    elif report is None:", "    elif report is None and code != 1:",
          VERDICTS, "a script that died with a traceback (exit 1, no report) reads as a failed check, not a crash"),
    Break("long-runs-stop-at-first-failure", LONG_RUNS,
          "        _write(out, summary)\n    ended = time.time()",
          "        _write(out, summary)\n        if result[\"status\"] != \"passed\":\n            break\n"
          "    ended = time.time()",
          VERDICTS, "a crashed run ends the whole session: the runs after it never happen"),
]

if __name__ == "__main__":
    run.BREAKS = LONG_RUNS_BREAKS
    sys.exit(run.main())
