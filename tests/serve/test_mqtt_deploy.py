"""deploy/systemd/deer-worker-mqtt.service: systemd-analyze verify and security, and its ExecStart
parses with the CLI; the shipped configs/mqtt.yaml documents every setting."""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from conftest import GENEROUS_BOUND, ROOT, tool

UNIT = ROOT / "deploy" / "systemd" / "deer-worker-mqtt.service"
TARGET = ROOT / "deploy" / "systemd" / "deer-worker.target"
INSTALLED_BINARY = "/opt/deer-worker/.venv/bin/deer-worker"
SYSTEMD_ANALYZE, needs_systemd = tool("systemd-analyze", "systemd")
EXPOSURE_MAX = 2.0  # systemd-analyze security's score of the unit as hardened (1.5 OK); a ratchet


def settings(text: str) -> dict[tuple[str, str], list[str]]:
    found, section = {}, ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.setdefault((section, key), []).append(value)
    return found


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """On a copy whose ExecStart names this checkout's entry point (systemd insists it exists)."""
    here = ROOT / ".venv" / "bin" / "deer-worker"
    binary = str(here) if here.exists() else shutil.which("deer-worker") or "/bin/true"
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BINARY, binary))
    shutil.copy(TARGET, tmp_path / TARGET.name)
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", f"./{UNIT.name}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=GENEROUS_BOUND)


@needs_systemd
def test_the_unit_verifies(tmp_path):
    done = verify(tmp_path, UNIT.read_text())
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done


@needs_systemd
@pytest.mark.parametrize("old, new", [("ProtectSystem=strict", "ProtectSystem=strikt"),
                                      ("KillSignal=SIGTERM", "KillSignal=SIGTERMINATE"), ("[Service]", "[Servce]")])
def test_verify_catches_a_broken_unit(tmp_path, old, new):
    done = verify(tmp_path, UNIT.read_text().replace(old, new, 1))
    assert done.returncode != 0 or done.stdout or done.stderr


@needs_systemd
def test_sandboxing_keeps_the_exposure_score(tmp_path):
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace(INSTALLED_BINARY, "/bin/true"))
    done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager",
                           f"--threshold={int(EXPOSURE_MAX * 10)}", f"./{UNIT.name}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=GENEROUS_BOUND)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score and done.returncode == 0 and float(score[1]) <= EXPOSURE_MAX, done.stdout[-2000:] + done.stderr


def test_the_unit_runs_the_bridge_unprivileged_and_stops_with_the_target():
    from worker.cli import build_parser

    unit = settings(UNIT.read_text())
    [exec_start] = unit[("Service", "ExecStart")]
    args = build_parser().parse_args(exec_start.split()[1:])
    assert (args.command, args.config) == ("mqtt", "/etc/deer-worker/mqtt.yaml")
    assert unit[("Service", "User")][0] not in ("", "root", "0") and unit[("Service", "KillSignal")] == ["SIGTERM"]
    assert unit[("Unit", "PartOf")] == unit[("Install", "WantedBy")] == [TARGET.name]
    assert all(v.startswith("-") for v in unit[("Service", "EnvironmentFile")])  # optional


def test_the_shipped_mqtt_yaml_names_every_setting():
    from worker.serve.mqtt_config import BridgeConfig

    shipped = yaml.safe_load((ROOT / "configs" / "mqtt.yaml").read_text())
    assert set(shipped) == {f.name for f in fields(BridgeConfig)}
    assert {k: v for k, v in shipped.items()} == {f.name: getattr(BridgeConfig(), f.name) for f in fields(BridgeConfig)}


def test_the_shipped_mosquitto_snippet_turns_nagle_off_and_mosquitto_takes_it(tmp_path):
    """deploy/mosquitto/deer-worker.conf (set_tcp_nodelay true, the broker's side of the bridge's latency)
    is what the tests' and the benchmark's broker use, and a real mosquitto starts with it included."""
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mqtt_harness as mh

    snippet = ROOT / "deploy" / "mosquitto" / "deer-worker.conf"
    options = [line.split() for line in snippet.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert options == [["set_tcp_nodelay", "true"]]
    broker = mh.Mosquitto(tmp_path / "broker")
    assert "set_tcp_nodelay true" in broker._write_conf().read_text().splitlines()
    (tmp_path / "conf.d").mkdir()
    shutil.copy(snippet, tmp_path / "conf.d" / snippet.name)
    port = mh.free_port()
    (tmp_path / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                             f"user {getpass.getuser()}\ninclude_dir {tmp_path / 'conf.d'}\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def listening() -> bool:
        assert proc.poll() is None, proc.stdout.read()  # an option it does not know stops it
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    try:
        mh.wait_for(listening, GENEROUS_BOUND, "mosquitto with the snippet included")
    finally:
        proc.terminate()
        proc.wait(GENEROUS_BOUND)
