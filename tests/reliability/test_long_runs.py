"""benchmarks/long_runs.py: the long reliability runs in one command. The real command on its cheapest run
(bad inputs, quick), and the runner itself on stand-in scripts: a run that fails its checks, one that
crashes and one that hangs do not stop the others, and each gets its own verdict."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import long_runs  # noqa: E402
from conftest import GENEROUS_BOUND  # noqa: E402

N = 60
SPEED_INDEX_CAP = 60 + 5  # worker.tools.doctor.speed_index: 5 s of benchmark_app, which it gives up on after 60 s more


def _utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def test_quick_bad_inputs_writes_a_dated_summary_with_the_run_its_command_and_its_report(tmp_path, host_pace):
    out = tmp_path / "summary.json"
    # the host's speed index (capped), then bad_inputs.py: a worker start (a load) and N jobs in batches of four
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_runs.py"), "--quick", "--only",
                           "bad_inputs", "--bad-inputs", str(N), "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=SPEED_INDEX_CAP + host_pace.bound(loads=1, batches=N / 4))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    assert summary["complete"] and summary["passed"] and summary["not_passed"] == []
    assert summary["host"].startswith("host: ") and "speed index" in summary["host"]
    assert proc.stdout.splitlines()[0] == summary["host"]
    assert re.fullmatch(r"[0-9a-f]{40}", summary["git"]["commit"]) and isinstance(summary["git"]["dirty"], bool)
    assert summary["settings"]["quick"] and summary["settings"]["bad_inputs"] == N
    (run,) = summary["runs"]
    assert run["name"] == "bad_inputs" and run["status"] == "passed" and run["exit_code"] == 0
    script = str(ROOT / "benchmarks" / "reliability" / "bad_inputs.py")
    assert run["command"] == [sys.executable, script, "--n", str(N), "--json", run["report_path"]]
    assert Path(run["report_path"]).parent == out.with_suffix("") and Path(run["log_path"]).exists()
    started, ended = _utc(run["started_at"]), _utc(run["ended_at"])
    assert _utc(summary["started_at"]) <= started <= ended <= _utc(summary["ended_at"])
    assert 0 < run["wall_s"] <= summary["wall_s"]
    # the script's own report, embedded as it wrote it
    assert run["report"] == json.loads(Path(run["report_path"]).read_text())
    assert run["report"]["jobs"] == N and run["report"]["all_ended"]


STAND_INS = {  # name -> the script's body; argv[-1] is its report path
    "crashes": "raise RuntimeError('a crash before any report')",
    "fails": "import json, sys; json.dump({'checked': 'no'}, open(sys.argv[-1], 'w')); sys.exit(1)",
    "hangs": "import time; time.sleep(600)",
    "passes": "import json, sys; json.dump({'checked': 'yes', 'n': int(sys.argv[1])}, open(sys.argv[-1], 'w'))",
}


def _python_start_s() -> float:
    """A fresh interpreter that starts, imports json and exits, timed now: what each stand-in costs today."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import json"], check=True, timeout=GENEROUS_BOUND)
    return time.monotonic() - started


def test_each_run_gets_its_own_verdict_and_a_crash_or_a_hang_does_not_stop_the_rest(tmp_path):
    # The runs' timeout: its expiry is what `hangs` must get, so it stays short (the hang's wall_s is asserted
    # below 60 s), but the other three must start Python and end within it: 2 s, or ten such starts measured now.
    min_timeout = max(2.0, 10 * _python_start_s())
    runs = []
    for name, body in STAND_INS.items():
        script = tmp_path / f"{name}.py"
        script.write_text(body + "\n")
        runs.append(long_runs.Run(name, str(script), lambda s: [str(s["kills"])], "--json", lambda s: 0.1))
    out = tmp_path / "out" / "summary.json"
    summary = long_runs.run_all(runs, {"kills": 7}, out, ["long_runs"], min_timeout=min_timeout,
                                host=lambda: "host: test")
    by_name = {r["name"]: r for r in summary["runs"]}
    assert list(by_name) == list(STAND_INS)  # in order, none skipped after the crash or the hang
    assert {n: r["status"] for n, r in by_name.items()} == {"crashes": "crashed", "fails": "failed",
                                                              "hangs": "crashed", "passes": "passed"}
    assert by_name["crashes"]["report"] is None and "RuntimeError" in Path(by_name["crashes"]["log_path"]).read_text()
    assert "timeout" in by_name["hangs"]["why"] and by_name["hangs"]["wall_s"] < 60
    assert by_name["fails"]["report"] == {"checked": "no"} and by_name["fails"]["exit_code"] == 1
    assert by_name["passes"]["report"] == {"checked": "yes", "n": 7}
    assert summary["passed"] is False and summary["not_passed"] == ["crashes", "fails", "hangs"]
    assert json.loads(out.read_text()) == summary


def test_a_bad_command_line_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "long_runs.py"), "--only", "nope"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=GENEROUS_BOUND)  # starts, exits
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
    assert not list(tmp_path.iterdir())  # no summary for a run that never started
