"""deer-worker doctor: each check on crafted host files, and the whole run against the real local Redis."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from conftest import CPUINFO, FP32_MODEL, TEST_REDIS_URL, _redis_up
from worker.tools import doctor
from worker.tools.doctor import FAIL, OK, WARN

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # port 1: connection refused at once


def run_doctor(capsys, *argv: str) -> tuple[int, list[dict]]:
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    code = doctor.run(parser.parse_args([*argv, "--json"]))
    return code, json.loads(capsys.readouterr().out)


def by_check(findings: list[dict]) -> dict[str, dict]:
    return {f["check"]: f for f in findings}



# --- host checks on crafted files -------------------------------------------------------------------
def test_cpu_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags="avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_int8"))
    f = doctor.check_cpu(path)
    assert f.status == OK
    assert "Test CPU" in f.detail and "AVX2 yes" in f.detail and "AVX-512F yes" in f.detail
    assert "VNNI AVX512_VNNI" in f.detail and "AVX512_BF16 yes" in f.detail and "amx_tile/amx_int8" in f.detail


def test_haswell_like_cpu_has_no_vnni(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags="avx2 fma"))
    f = doctor.check_cpu(path)
    assert f.status == OK and "VNNI no" in f.detail and "AVX512_BF16 no" in f.detail and "INT8" in f.advice
    # what INT8 can be expected to give without VNNI, and the command that settles it on this host
    assert "1.5-2x" in f.advice and "deer-worker tune" in f.advice


def test_vnni_cpu_gets_no_int8_warning(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags="avx2 fma avx512f avx512_vnni"))
    assert doctor.check_cpu(path).advice == ""


def test_cpu_without_avx2_warns(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(flags="avx"))
    assert doctor.check_cpu(path).status == WARN
    assert doctor.check_cpu(tmp_path / "missing").status == WARN


def test_cores_and_cgroup_quota(tmp_path):
    cpuinfo, cpu_max = tmp_path / "cpuinfo", tmp_path / "cpu.max"
    cpuinfo.write_text(CPUINFO.format(flags="avx2"))  # two threads on one core
    f = doctor.check_cores(cpuinfo, cpu_max)
    assert f.status == OK and "1 physical cores, 2 threads" in f.detail and "SMT" in f.advice
    cpu_max.write_text("max 100000\n")
    assert doctor.check_cores(cpuinfo, cpu_max).status == OK
    cpu_max.write_text("50000 100000\n")  # half a CPU
    f = doctor.check_cores(cpuinfo, cpu_max)
    assert f.status == WARN and "quota 0.5" in f.detail and "threads: 1" in f.advice


def test_governor(tmp_path):
    f = doctor.check_governor(tmp_path)
    assert f.status == OK and "not exposed (VM)" in f.detail
    for cpu, governor in (("cpu0", "performance"), ("cpu1", "performance")):
        (tmp_path / cpu / "cpufreq").mkdir(parents=True)
        (tmp_path / cpu / "cpufreq" / "scaling_governor").write_text(governor + "\n")
    assert doctor.check_governor(tmp_path).status == OK
    (tmp_path / "cpu1" / "cpufreq" / "scaling_governor").write_text("powersave\n")
    f = doctor.check_governor(tmp_path)
    assert f.status == WARN and "powersave on 1 CPUs" in f.detail
    assert "cpupower frequency-set -g performance" in f.advice


def test_precision_findings():
    assert doctor.precision_finding("f32", "f32").status == OK
    pinned = doctor.precision_finding("bf16", "f32")
    assert pinned.status == WARN and "bf16" in pinned.detail and "pins" in pinned.advice
    unpinned = doctor.precision_finding("bf16", "default")
    assert unpinned.status == WARN and "precision: f32" in unpinned.advice


def test_redis_password_is_not_printed():
    assert doctor._redact("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert doctor._redact("redis://host:6379/0") == "redis://host:6379/0"
    f = doctor.check_redis("redis://user:s3cret@127.0.0.1:1/0")
    assert f.status == FAIL and "s3cret" not in f.detail


# --- whole runs ---------------------------------------------------------------------------------------
def test_real_redis_is_reachable():
    if not _redis_up(TEST_REDIS_URL):
        pytest.fail(f"needs Redis at {TEST_REDIS_URL} (.ci/run starts one)")
    f = doctor.check_redis(TEST_REDIS_URL)
    assert f.status in (OK, WARN) and "Redis " in f.detail


def test_wrong_redis_url_fails(capsys, tmp_path):
    code, findings = run_doctor(capsys, "--redis", UNREACHABLE_REDIS, "--model", str(tmp_path / "no_model"))
    redis_finding = by_check(findings)["redis"]
    assert code == 1
    assert redis_finding["status"] == FAIL and "127.0.0.1:1" in redis_finding["detail"] and redis_finding["advice"]


def test_missing_model_fails_naming_the_path(capsys, tmp_path):
    missing = tmp_path / "deer_openvino_model"
    code, findings = run_doctor(capsys, "--redis", TEST_REDIS_URL, "--model", str(missing))
    model = by_check(findings)["model"]
    assert code == 1
    assert model["status"] == FAIL and str(missing) in model["detail"]


def test_bad_config_fails(capsys, tmp_path):
    config = tmp_path / "worker.yaml"
    config.write_text("batch: 7\n")
    code, findings = run_doctor(capsys, "--config", str(config), "--redis", UNREACHABLE_REDIS,
                                "--model", str(tmp_path / "none"))
    assert code == 1
    assert by_check(findings)["config"]["status"] == FAIL and "batch" in by_check(findings)["config"]["detail"]


def test_healthy_host_passes(capsys):
    if not _redis_up(TEST_REDIS_URL):
        pytest.fail(f"needs Redis at {TEST_REDIS_URL} (.ci/run starts one)")
    code, findings = run_doctor(capsys, "--redis", TEST_REDIS_URL, "--model", str(FP32_MODEL))
    checks = by_check(findings)
    assert code == 0, [f for f in findings if f["status"] == FAIL]
    assert {"cpu", "cores", "governor", "openvino", "precision", "config", "zones", "model", "redis"} <= set(checks)
    assert checks["model"]["status"] == OK and " ms" in checks["model"]["detail"]
    # The JSON is read by deployment scripts: its statuses are the literal strings, a healthy host has no
    # FAIL, and anything short of OK says what to do about it.
    assert {f["status"] for f in findings} <= {"OK", "WARN"}, findings
    assert all(f["advice"] for f in findings if f["status"] != "OK"), findings


def test_text_output_has_advice_lines(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    doctor.add_arguments(parser)
    code = doctor.run(parser.parse_args(["--redis", UNREACHABLE_REDIS, "--model", str(tmp_path / "none")]))
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  redis" in out and "-> start Redis" in out and "failures" in out
