"""The deliberate breaks of the long runs' verdicts, run with run.py's machinery: benchmarks/long_runs.py
(each run's verdict, the rest going on after a crash; seconds each) and the reliability scripts' own
failed_checks, which their exit status and long_runs.py's verdict come from (caught by the short
versions in tests/reliability: 20-75 s each; the multihost scripts' are in multihost_breaks.py):

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

R = "benchmarks/reliability/"
T = "tests/reliability/"

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
    Break("chaos-replacement-unchecked", R + "chaos.py",
          '    if report["not_restarted"]:', "    if False:",
          T + "test_chaos_kills.py::test_three_kills_mid_batch_lose_nothing",
          "chaos.py passes a run in which a killed worker was never replaced"),
    Break("restart-loss-unchecked", R + "redis_restart.py",
          '    if report["lost_acknowledged"]:', "    if False:",
          T + "test_redis_restart.py::"
          "test_workers_come_back_after_a_redis_restart_and_nothing_acknowledged_is_lost[sigkill-10.0]",
          "redis_restart.py passes a run that lost acknowledged jobs"),
    Break("bad-inputs-metrics-unchecked", R + "bad_inputs.py",
          '    if report["metrics_jobs_total"] != counted:', "    if False:",
          T + "test_bad_input_volume.py::test_a_thousand_bad_inputs_fail_alone_with_their_reason",
          "bad_inputs.py passes when /metrics disagrees with the outcomes"),
    Break("soak-fd-growth-unchecked", R + "soak.py",
          '    if report["max_fd_growth"] > 0:', "    if False:",
          T + "test_soak_short.py::test_short_soak_at_80_percent_of_capacity",
          "soak.py passes a soak that leaks file descriptors"),
]

if __name__ == "__main__":
    run.BREAKS = LONG_RUNS_BREAKS
    sys.exit(run.main())
