"""worker.evaluation.isa: a oneDNN cap is real only in a process started with it; a command asked for one
re-runs itself once; the probe sees the cap take and capped FP32 equal uncapped. The cap used is AVX, below
any host we run on (the user's is AVX2), so these tests bite on AVX2-only days too."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FP32_MODEL, ROOT, SAMPLES
from worker import cli
from worker.errors import ConfigError
from worker.evaluation import isa
from worker.evaluation.host import host_line
from worker.tools.options import rerun_for_isa


@pytest.fixture(autouse=True)
def _uncapped(monkeypatch):
    for name in (isa.ENV, isa.CHILD_ENV):
        monkeypatch.delenv(name, raising=False)


def test_probe_sees_the_cap_take_and_capped_fp32_equal_uncapped():
    found = isa.probe("avx", FP32_MODEL)
    assert found.ok, found.line()
    assert found.reported == "Intel AVX"  # oneDNN's own verbose header in the capped child
    assert found.kernels and not [k for k in found.kernels if "avx2" in k or "avx512" in k]
    assert found.max_abs_diff <= isa.PROBE_TOLERANCE * found.scale


def test_a_cap_set_after_the_process_started_does_not_count(monkeypatch):
    # oneDNN reads the variable once: setting it now, in a process that may have dispatched, caps nothing.
    if os.environ.get(isa.ONEDNN_ENV):
        pytest.skip("this test process itself started with a oneDNN cap")
    monkeypatch.setenv(isa.ONEDNN_ENV, "AVX")
    assert isa.process_cap() == isa.NATIVE and isa.needs_rerun("avx")
    assert "isa cap" not in host_line()


def test_a_child_started_capped_says_so_in_its_host_line():
    code = "from worker.evaluation.host import host_line; from worker.evaluation.isa import proxy_note; " \
           "print(host_line()); print(proxy_note())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=isa.cap_environment("avx"),
                         capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    assert " | isa cap: avx | " in out[0]
    assert "proxy" in out[1] and "ONEDNN_MAX_CPU_ISA" in out[1]


def test_the_flag_beats_the_environment_which_beats_the_default(monkeypatch):
    assert isa.resolve(None, "avx2") == "avx2"
    monkeypatch.setenv(isa.ENV, "native")
    assert isa.resolve(None, "avx2") == "native"
    assert isa.resolve("avx2", "native") == "avx2"
    monkeypatch.setenv(isa.ENV, "avx512")
    with pytest.raises(ConfigError, match="DEER_WORKER_ISA='avx512'"):
        isa.resolve(None, "avx2")


def test_a_process_running_as_asked_does_not_re_run(monkeypatch):
    calls = []
    monkeypatch.setattr(isa, "run_capped", lambda command, target: calls.append(target) or 0)
    monkeypatch.setattr(isa, "start_environment", lambda: {isa.ONEDNN_ENV: "AVX"})  # the re-run child
    args = cli.build_parser().parse_args(["bench", "--model", "x"])
    monkeypatch.setenv(isa.ENV, "avx")
    assert rerun_for_isa(args, ["never"]) is None and calls == []


def test_a_child_that_still_lacks_the_cap_fails_instead_of_re_running(monkeypatch):
    monkeypatch.setenv(isa.CHILD_ENV, "1")
    with pytest.raises(ConfigError, match="drops ONEDNN_MAX_CPU_ISA"):
        isa.run_capped([sys.executable, "-c", "pass"], "avx")


def test_bench_asked_for_a_cap_re_runs_itself_capped_once(tmp_path):
    env = {**os.environ, isa.ENV: "avx", "PYTHONPATH": str(ROOT)}
    env.pop(isa.ONEDNN_ENV, None)
    run = subprocess.run([sys.executable, "-m", "worker", "bench", str(SAMPLES / "day_1280x720_deer.png"),
                          "--model", str(FP32_MODEL), "--threads", "1", "--batch", "1", "--precision", "f32",
                          "--seconds", "0.2", "--out", str(tmp_path / "bench.json")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    table = run.stdout.splitlines()
    assert " | isa cap: avx | " in table[0]  # measured in the capped child
    # the proxy note, once (one child), with the parent's probe: oneDNN's header and the FP32 comparison
    assert [line for line in table if "proxy" in line] == [table[1]]
    assert "probe: oneDNN isa:Intel AVX, capped vs uncapped FP32 max |diff|" in table[1]
    assert " | isa cap: avx | " in json.loads((tmp_path / "bench.json").read_text())["host"]


def test_an_unknown_isa_is_one_usage_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["validate", "--isa", "sse2", "--model", "x", "--data", "y"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deer-worker: usage:") and "--isa" in err[0]


def test_no_probe_model_is_a_refusal_that_says_what_to_do(tmp_path):
    found = isa.probe("avx2", tmp_path)
    assert not found.ok and "--isa native" in found.problems[0]
