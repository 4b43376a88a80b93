"""deploy/: Prometheus config and rules (promtool), systemd units (systemd-analyze), the Grafana
dashboard, and that every metric they name is one a real worker's /metrics serves (a burst worker on
the demo model, after real jobs of every outcome)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import GENEROUS_BOUND, TEST_REDIS_URL, _redis_up, serve_jobs_of_every_outcome, tool
from worker.constants import DEFAULT_METRICS_PORT

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "deer-worker.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "deer-worker.json"
UNIT = DEPLOY / "systemd" / "deer-worker@.service"
TARGET = DEPLOY / "systemd" / "deer-worker.target"
INSTALLED_BINARY = "/opt/deer-worker/.venv/bin/deer-worker"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself, not scraped

PROMTOOL, needs_promtool = tool("promtool", "prometheus")
SYSTEMD_ANALYZE, needs_systemd = tool("systemd-analyze", "systemd")


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=GENEROUS_BOUND, cwd=cwd)  # no model in it


# --- PromQL: which metric names does an expression use? ------------------------------------------
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan", "atan2"}
_TOKEN = re.compile(r"(?P<num>\d[\w.]*)|(?P<id>[A-Za-z_:][\w:]*)(?P<call>\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Identifiers in metric-name position: not functions, keywords, label names, strings or durations."""
    expr = re.sub(r"\$\{?\w+\}?", "1", expr)  # Grafana variables ($__rate_interval, ${instance})
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for m in _TOKEN.finditer(expr):
        if m["id"] and not m["call"] and m["id"].lower() not in _KEYWORDS:
            names.add(m["id"])
    return names


def scrape_families(text: str) -> tuple[dict[str, str], set[str]]:
    """Exposition text -> ({family: type}, {sample names})."""
    types, samples = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            types[family] = kind
        elif line and not line.startswith("#"):
            samples.add(re.match(r"[A-Za-z_:][\w:]*", line).group())
    return types, samples


_SUFFIXES = {"_bucket": {"histogram"}, "_sum": {"histogram", "summary"}, "_count": {"histogram", "summary"},
             "_total": {"counter"}, "_created": {"counter", "histogram", "summary"}}


def family_of(name: str, types: dict[str, str], samples: set[str]) -> str | None:
    """The scraped family a series name in a query belongs to, or None when no scrape would give it.

    A histogram's series are <name>_bucket/_sum/_count: the bare name selects nothing, and a suffix
    only counts when the family it strips to has a type that makes that series."""
    if name not in samples:
        return None
    if types.get(name) not in (None, "histogram", "summary"):
        return name  # gauges; counters too, typed under their _total name in the classic text format
    for suffix, kinds in _SUFFIXES.items():
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) in kinds:
            return base
    return None


@pytest.fixture(scope="module")
def scraped(fp32_detector) -> tuple[dict[str, str], set[str]]:
    """/metrics of a real worker (a burst DeerWorker on the demo model against the real Redis) after
    real jobs of every outcome, scraped over HTTP from its HealthServer."""
    import redis

    if not _redis_up(TEST_REDIS_URL):
        pytest.fail(f"needs Redis at {TEST_REDIS_URL} (.ci/run starts one)")
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    conn.flushdb()
    try:
        text, _ = serve_jobs_of_every_outcome(conn, fp32_detector, "deploy-scrape")
    finally:
        conn.flushdb()
    # and the MQTT bridge's families, as its /metrics serves them (the dashboard's bridge panels)
    from worker.serve.mqtt_bridge import BridgeMetrics

    return scrape_families(text + BridgeMetrics().exposition().decode())


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le, stage) (rate(deer_worker_stage_duration_seconds_bucket'
            '{job="deer-worker", instance=~"$instance", stage!="x_total"}[$__rate_interval]))) > 0.04')
    assert metric_names(expr) == {"deer_worker_stage_duration_seconds_bucket"}
    expr = ('max by (job, queue) (deriv(deer_worker_queue_depth[10m])) > 0 and on (job) '
            'sum(rate(a_total[5m] offset 1h)) by (job) / 1e3 or absent(up{job="x"}) unless vector(0)')
    assert metric_names(expr) == {"deer_worker_queue_depth", "a_total", "up"}
    assert metric_names("job:deer_worker_jobs_failed:ratio_rate5m > 0.05") == {"job:deer_worker_jobs_failed:ratio_rate5m"}


def test_family_resolution(scraped):
    types, samples = scraped
    assert family_of("deer_worker_stage_duration_seconds_bucket", types, samples) == "deer_worker_stage_duration_seconds"
    assert family_of("deer_worker_batch_size_count", types, samples) == "deer_worker_batch_size"
    assert family_of("deer_worker_jobs_total", types, samples) in ("deer_worker_jobs_total", "deer_worker_jobs")
    assert family_of("deer_worker_queue_depth", types, samples) == "deer_worker_queue_depth"
    assert family_of("deer_worker_stage_duration_seconds", types, samples) is None  # bare histogram name
    assert family_of("deer_worker_ready_count", types, samples) is None
    assert family_of("deer_worker_job_duration_seconds_total", types, samples) is None
    assert family_of("deer_worker_inference_seconds_bucket", types, samples) is None


# --- dashboard ---------------------------------------------------------------------------------
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_exprs(dash: dict) -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in dash["panels"]}


def all_dashboard_exprs() -> list[str]:
    return [e for exprs in panel_exprs(dashboard()).values() for e in exprs]


def rule_exprs() -> tuple[list[str], set[str]]:
    """(every rule expression, the names recording rules define)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    return [r["expr"] for r in rules], {r["record"] for r in rules if "record" in r}


def test_dashboard_metrics_are_all_scraped(scraped):
    types, samples = scraped
    used = set().union(*(metric_names(e) for e in all_dashboard_exprs()))
    assert len(used) >= 10, used  # the extraction found the dashboard's metrics at all
    missing = {n for n in used - PROMETHEUS_OWN if family_of(n, types, samples) is None}
    assert not missing, f"dashboard uses metrics no worker serves: {sorted(missing)}"


def test_rule_metrics_are_all_scraped_or_recorded(scraped):
    types, samples = scraped
    exprs, recorded = rule_exprs()
    used = set().union(*(metric_names(e) for e in exprs))
    assert recorded & used and len(used - recorded) >= 5, used
    missing = {n for n in used - PROMETHEUS_OWN - recorded if family_of(n, types, samples) is None}
    assert not missing, f"rules use metrics no worker serves: {sorted(missing)}"


def test_dashboard_datasource_is_a_variable():
    dash = dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert re.search(r'job="deer-worker(-mqtt)?"', t["expr"]), (p["title"], t["expr"])


def test_dashboard_layout():
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({p["title"] for p in panels}) == len(panels)
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_has_the_required_panels():
    exprs = panel_exprs(dashboard())
    flat = " ".join(all_dashboard_exprs()).replace(" ", "")

    def panels_with(*needles: str) -> list[str]:
        return [t for t, es in exprs.items() if any(all(n in e.replace(" ", "") for n in needles) for e in es)]

    for q in ("0.5", "0.95", "0.99"):
        assert panels_with(f"histogram_quantile({q},sumby(le,stage)(rate(deer_worker_stage_duration_seconds_bucket",
                           "[$__rate_interval]"), q
        assert panels_with(f"histogram_quantile({q},sumby(le)(rate(deer_worker_job_duration_seconds_bucket"), q
    assert panels_with("sumby(outcome)(rate(deer_worker_jobs_total")
    assert panels_with('outcome="failed"', "/sum(rate(deer_worker_jobs_total")
    assert panels_with("deer_worker_queue_depth")
    assert panels_with("deer_worker_batch_size_bucket") and panels_with("deer_worker_batch_size_sum",
                                                                        "deer_worker_batch_size_count")
    assert panels_with("sumby(camera)", "deer_worker_detections_total")
    assert 'up{job="deer-worker"' in flat and "deer_worker_ready" in flat


def test_job_duration_panel_draws_the_40ms_line():
    [panel] = [p for p in dashboard()["panels"]
               if any("deer_worker_job_duration_seconds_bucket" in t["expr"] for t in p["targets"])]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert 0.04 in [s["value"] for s in defaults["thresholds"]["steps"]]
    assert "line" in defaults["custom"]["thresholdsStyle"]["mode"]


def test_grafana_provisioning_examples():
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "prometheus"
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/deer-worker.yaml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"


# --- Prometheus config and rules -----------------------------------------------------------------
def test_scrape_targets_follow_the_port_scheme():
    config = yaml.safe_load(PROM_CONFIG.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "deer-worker"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"127.0.0.1:{DEFAULT_METRICS_PORT}"]  # the one instance deploy/README.md starts


@needs_promtool
def test_promtool_check_config_and_rules():
    done = run(PROMTOOL, "check", "config", str(PROM_CONFIG))  # also checks the rule files it names
    assert done.returncode == 0 and "WARN" not in done.stdout + done.stderr, done
    done = run(PROMTOOL, "check", "rules", str(RULES))
    assert done.returncode == 0 and "WARN" not in done.stdout + done.stderr, done


@needs_promtool
def test_promtool_check_rules_can_fail(tmp_path):
    bad = tmp_path / "bad.rules.yml"
    bad.write_text(RULES.read_text().replace("> 0.05", "> > 0.05"))
    assert run(PROMTOOL, "check", "rules", str(bad)).returncode != 0


def _series(name: str, labels: dict[str, str], values: str) -> dict:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@needs_promtool
def test_alerts_fire_on_synthetic_series(tmp_path):
    """promtool's rule unit tests: each alert fires on a series that should fire it, and stays quiet
    on one that should not. One sample per minute over 30 minutes."""
    job = {"job": "deer-worker", "instance": "127.0.0.1:9810"}
    inf = {**job, "stage": "inference"}
    tests = [
        {  # p95 inference ~50 ms; decode is fast and must not alert
            "interval": "1m",
            "input_series": [
                _series("deer_worker_stage_duration_seconds_bucket", {**inf, "le": "0.04"}, "0x30"),
                _series("deer_worker_stage_duration_seconds_bucket", {**inf, "le": "0.05"}, "0+600x30"),
                _series("deer_worker_stage_duration_seconds_bucket", {**inf, "le": "+Inf"}, "0+600x30"),
                _series("deer_worker_stage_duration_seconds_bucket", {**job, "stage": "decode", "le": "0.005"},
                        "0+600x30"),
                _series("deer_worker_stage_duration_seconds_bucket", {**job, "stage": "decode", "le": "+Inf"},
                        "0+600x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "8m", "alertname": "DeerWorkerInferenceSlow", "exp_alerts": []},
                {"eval_time": "20m", "alertname": "DeerWorkerInferenceSlow",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "deer-worker", "stage": "inference"}}]},
            ],
        },
        {  # 10% failed -> alert; 1% failed on another job -> none; expired snapshots -> alert
            "interval": "1m",
            "input_series": [
                _series("deer_worker_jobs_total", {**job, "outcome": "ok", "error_kind": "none"}, "0+900x30"),
                _series("deer_worker_jobs_total", {**job, "outcome": "failed", "error_kind": "corrupt_image"},
                        "0+100x30"),
                _series("deer_worker_jobs_total", {**job, "outcome": "expired", "error_kind": "too_old"}, "0+5x30"),
                _series("deer_worker_jobs_total", {"job": "quiet", "outcome": "ok", "error_kind": "none"}, "0+990x30"),
                _series("deer_worker_jobs_total", {"job": "quiet", "outcome": "failed", "error_kind": "x"}, "0+10x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "DeerWorkerErrorRate",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "deer-worker"}}]},
                {"eval_time": "20m", "alertname": "DeerWorkerSnapshotsExpiring",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "deer-worker"}}]},
            ],
        },
        {  # queue growing past 100 (both workers report it: one alert); a worker down; none ready
            "interval": "1m",
            "input_series": [
                _series("deer_worker_queue_depth", {**job, "queue": "deer-snapshots"}, "0+10x30"),
                _series("deer_worker_queue_depth", {**job, "instance": "127.0.0.1:9811", "queue": "deer-snapshots"},
                        "0+10x30"),
                _series("up", {**job, "instance": "127.0.0.1:9811"}, "0x30"),
                _series("deer_worker_ready", job, "1x5 0x25"),
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "DeerWorkerQueueBacklogGrowing", "exp_alerts": []},
                {"eval_time": "25m", "alertname": "DeerWorkerQueueBacklogGrowing",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "deer-worker",
                                                "queue": "deer-snapshots"}}]},
                {"eval_time": "10m", "alertname": "DeerWorkerDown",
                 "exp_alerts": [{"exp_labels": {"severity": "warning", "job": "deer-worker",
                                                "instance": "127.0.0.1:9811"}}]},
                {"eval_time": "5m", "alertname": "DeerWorkerNoReadyWorker", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "DeerWorkerNoReadyWorker",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
            ],
        },
        {  # no worker scraped at all
            "interval": "1m",
            "input_series": [_series("up", {**job, "instance": "127.0.0.1:9812"}, "0x10")],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "DeerWorkerNoReadyWorker",
                 "exp_alerts": [{"exp_labels": {"severity": "critical"}}]},
            ],
        },
    ]
    # promtool compares annotations too; the test is about expressions, `for` and labels, so it runs
    # on a copy of the rules without them.
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "deer-worker.rules.yml"
    rules.write_text(yaml.safe_dump(groups))
    spec = tmp_path / "deer-worker.rules.test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    done = run(PROMTOOL, "test", "rules", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr


# --- systemd -------------------------------------------------------------------------------------
def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) for every setting, in order; keys may repeat."""
    entries, section = [], ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_value(path: Path, key: str) -> list[str]:
    return [v for _, k, v in unit_entries(path) if k == key]


def verify_units(tmp_path: Path, unit_text: str | None = None, binary: str | None = None) -> subprocess.CompletedProcess:
    """systemd-analyze verify on copies of the units. It insists the ExecStart binary exists, and the
    installed one (/opt/deer-worker/.venv) does not here, so the copy points at this checkout's
    entry point instead; nothing else changes. Parse warnings (unknown keys, bad values) do not
    change its exit code, so callers treat any output as a failure too."""
    text = unit_text if unit_text is not None else UNIT.read_text()
    assert INSTALLED_BINARY in text
    if binary is None:
        here = ROOT / ".venv" / "bin" / "deer-worker"
        binary = str(here) if here.exists() else shutil.which("deer-worker") or "/bin/true"
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_BINARY, binary))
    shutil.copy(TARGET, tmp_path / TARGET.name)
    return run(SYSTEMD_ANALYZE, "verify", "--man=no", "./deer-worker@0.service", "./deer-worker@3.service",
               "./deer-worker.target", cwd=tmp_path)


@needs_systemd
def test_systemd_units_verify(tmp_path):
    done = verify_units(tmp_path)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done


@needs_systemd
@pytest.mark.parametrize("breakage", [("ProtectSystem=strict", "ProtectSystem=strikt"),
                                      ("TimeoutStopSec=45", "TimeoutStopSecs=45"),
                                      ("KillSignal=SIGTERM", "KillSignal=SIGTERMINATE"),
                                      ("[Service]", "[Servce]")])
def test_systemd_verify_catches_unit_errors(tmp_path, breakage):
    old, new = breakage
    text = UNIT.read_text()
    assert old in text
    done = verify_units(tmp_path, text.replace(old, new, 1))
    assert done.returncode != 0 or done.stdout or done.stderr


@needs_systemd
def test_systemd_verify_catches_a_missing_binary(tmp_path):
    done = verify_units(tmp_path, binary="/nonexistent/bin/deer-worker")
    assert done.returncode != 0 and "not executable" in done.stdout + done.stderr


def test_unit_properties():
    """What the unit must do, not a copy of it: run unprivileged, restart on a crash, stop and start
    with the target, keep the compiled-model cache where systemd made a directory for it, and read
    an optional environment file whose keys (like its own Environment=) are config settings."""
    from dataclasses import fields

    from worker.config import ENV_PREFIX, WorkerConfig

    entries = {(s, k): v for s, k, v in unit_entries(UNIT)}
    assert entries[("Service", "User")] not in ("", "root", "0")
    assert entries[("Service", "Restart")] in ("on-failure", "always") and int(entries[("Service", "RestartSec")]) > 0
    assert entries[("Unit", "PartOf")] == entries[("Install", "WantedBy")] == TARGET.name
    assert ("Install", "WantedBy", "multi-user.target") in unit_entries(TARGET)
    known = {ENV_PREFIX + f.name.upper() for f in fields(WorkerConfig)}
    env = dict(e.split("=", 1) for e in unit_value(UNIT, "Environment"))
    ours = {k for k in env if k.startswith(ENV_PREFIX)}
    assert ours and ours <= known, sorted(ours - known)
    assert env[ENV_PREFIX + "CACHE_DIR"].startswith(f"/var/cache/{entries[('Service', 'CacheDirectory')]}/")
    assert all(v.startswith("-") for v in unit_value(UNIT, "EnvironmentFile"))  # optional: the unit starts without it


EXPOSURE_MAX = 5.5  # systemd-analyze security's score of the unit as hardened (5.4 MEDIUM); a ratchet


@needs_systemd
def test_unit_sandboxing_keeps_the_exposure_score(tmp_path):
    """systemd's own score of the sandboxing settings (ProtectSystem, NoNewPrivileges, ...): dropping
    one raises it past the ratchet."""
    (tmp_path / UNIT.name).write_text(UNIT.read_text().replace(INSTALLED_BINARY, "/bin/true"))
    done = run(SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", f"--threshold={int(EXPOSURE_MAX * 10)}",
               f"./{UNIT.name}", cwd=tmp_path)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score, done.stdout[-2000:] + done.stderr
    assert done.returncode == 0 and float(score[1]) <= EXPOSURE_MAX, score[0]


def test_stop_timeout_covers_the_job_timeout():
    from worker.constants import DEFAULT_JOB_TIMEOUT

    assert int(unit_value(UNIT, "TimeoutStopSec")[0]) > DEFAULT_JOB_TIMEOUT


def test_exec_start_parses_with_the_cli():
    from worker.cli import build_parser

    argv = unit_value(UNIT, "ExecStart")[0].replace("%i", "2").split()[1:]
    args = build_parser().parse_args(argv)
    assert (args.command, args.workers, args.worker_index, args.config) == ("run", 1, 2, "/etc/deer-worker/worker.yaml")


def test_env_example_keys_are_config_keys():
    from dataclasses import fields

    from worker.config import ENV_PREFIX, WorkerConfig

    known = {ENV_PREFIX + f.name.upper() for f in fields(WorkerConfig)}
    text = (DEPLOY / "systemd" / "deer-worker.env.example").read_text()
    keys = set(re.findall(r"^#?\s*(DEER_WORKER_[A-Z_]+)=", text, re.M))
    assert {"DEER_WORKER_REDIS_URL", "DEER_WORKER_THREADS", "DEER_WORKER_MODEL"} <= keys
    assert keys <= known, sorted(keys - known)


def test_readme_names_only_files_that_exist():
    text = (DEPLOY / "README.md").read_text()
    paths = set(re.findall(r"\b(?:deploy|configs)/[\w./@-]*\w", text))
    assert len(paths) >= 5
    assert not [p for p in sorted(paths) if not (ROOT / p).exists()]
