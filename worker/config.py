"""configs/worker.yaml -> WorkerConfig, with DEER_WORKER_<KEY> environment overrides.

Every key is typed and checked; a bad one is named (`worker.yaml: batch: ...`). Relative paths
are resolved against the repository/install root first, so the shipped defaults work from any cwd.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from worker import constants as C
from worker.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "models/demo"  # the demo package: its card names the IR it serves
DEFAULT_ZONES = "configs/zones.yaml"
DEFAULT_CONFIG = "configs/worker.yaml"  # read when no --config is given and it exists
ENV_PREFIX = "DEER_WORKER_"
# redis+sentinel:// and rediss+sentinel:// name Sentinels and a service (worker/jobqueue/connections.py)
# Snapshot aspect ratios whose input shapes a worker compiles and warms at start (16:9 -> 384x640 at
# 640): written WIDTHxHEIGHT, a size or a ratio alike, because YAML reads an unquoted 16:9 as a number.
DEFAULT_SHAPES = ("16x9", "4x3", "1x1")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")


@dataclass
class WorkerConfig:
    redis_url: str = C.DEFAULT_REDIS_URL
    queue: str = C.DEFAULT_QUEUE
    results_channel: str = C.DEFAULT_RESULTS_CHANNEL
    results_stream: str = C.DEFAULT_RESULTS_STREAM
    results_stream_maxlen: int = C.DEFAULT_RESULTS_STREAM_MAXLEN
    model: str = DEFAULT_MODEL
    models_dir: str = "models"  # where `deer-worker reload --model NAME` finds NAME (same path on every host)
    precision: str = "f32"
    threads: int = 0
    pin_threads: bool = True
    cache_dir: str = "~/.cache/deer-worker/ov-cache"
    batch: str = "auto"
    workers: int = 1
    zones: str = DEFAULT_ZONES
    max_age: float = C.DEFAULT_MAX_AGE
    latest_only: bool = False
    job_timeout: int = C.DEFAULT_JOB_TIMEOUT
    result_ttl: int = C.DEFAULT_RESULT_TTL
    failure_ttl: int = C.DEFAULT_FAILURE_TTL
    queued_ttl: int = C.DEFAULT_QUEUED_TTL
    retries: int = C.DEFAULT_RETRIES
    max_snapshot_bytes: int = C.DEFAULT_MAX_SNAPSHOT_BYTES
    max_pixels: int = C.DEFAULT_MAX_PIXELS
    snapshot_dirs: list[str] = field(default_factory=list)
    cpus: str = ""  # CPU ids for this worker process, e.g. "0,1" or "2-3"; the pool sets it per worker
    reduced_decode: bool = False
    shapes: list[str] = field(default_factory=lambda: list(DEFAULT_SHAPES))  # parse_shape; env: comma-separated
    iou: float = 0.0  # NMS IoU of a raw-head model; 0 = the model card's `iou`, else C.DEFAULT_IOU
    shadow_model: str = ""  # a candidate run beside `model` on sampled live snapshots (worker/serve/shadow.py)
    shadow_sample: float = 1.0  # share of served snapshots the shadow runs on, when shadow_model is set
    force_preprocessing: bool = False  # serve a v2 job's camera override that contradicts the model's CLAHE
    metrics_host: str = C.DEFAULT_METRICS_HOST
    metrics_port: int = C.DEFAULT_METRICS_PORT  # worker i of a pool serves on metrics_port + i; 0 = off
    # Several hosts: identity in worker names, and how soon a silent host's started jobs run elsewhere
    host_id: str = ""  # "" = the first HOST_ID_LENGTH hex digits of /etc/machine-id
    heartbeat_margin: int = C.DEFAULT_HEARTBEAT_MARGIN
    burst_redis_wait: float = C.DEFAULT_BURST_REDIS_WAIT  # s a `run --burst` waits for Redis before exiting 2
    maintenance_interval: int = C.DEFAULT_MAINTENANCE_INTERVAL
    worker_ttl: int = C.DEFAULT_WORKER_TTL

    def validate(self, source: str = "worker.yaml", origins: dict[str, str] | None = None) -> WorkerConfig:
        """`origins` names where a key's value came from when not `source` (an environment variable, an option)."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{(origins or {}).get(key, source)}: {key}: {why}")

        if self.batch not in C.BATCH_MODES:
            raise bad("batch", f"must be one of {', '.join(C.BATCH_MODES)}, got {self.batch!r}")
        if self.precision not in C.PRECISIONS:
            raise bad("precision", f"must be one of {', '.join(C.PRECISIONS)}, got {self.precision!r}")
        if not self.redis_url.startswith(REDIS_SCHEMES):
            raise bad("redis_url", f"must start with {', '.join(REDIS_SCHEMES)}, got {redact_url(self.redis_url)!r}")
        for key in ("workers", "job_timeout", "result_ttl", "failure_ttl", "queued_ttl",
                    "max_snapshot_bytes", "max_pixels", "results_stream_maxlen"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        for key in ("heartbeat_margin", "maintenance_interval"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1 second, got {getattr(self, key)}")
        if self.worker_ttl < C.MIN_WORKER_TTL:
            raise bad("worker_ttl", f"must be >= {C.MIN_WORKER_TTL} seconds (RQ blocks on dequeue for "
                                    f"worker_ttl - 15 s), got {self.worker_ttl}")
        if not re.fullmatch(r"[A-Za-z0-9_]{0,32}", self.host_id):
            raise bad("host_id", f"letters, digits and _ only, at most 32, got {self.host_id!r}")
        for key in ("threads", "retries", "metrics_port"):
            if getattr(self, key) < 0:
                raise bad(key, f"must be >= 0, got {getattr(self, key)}")
        try:
            parse_cpus(self.cpus)
        except ValueError:
            raise bad("cpus", f"expected CPU ids like '0,1' or '0-3', got {self.cpus!r}") from None
        if self.burst_redis_wait <= 0:
            raise bad("burst_redis_wait", f"must be > 0 seconds, got {self.burst_redis_wait}")
        if self.max_age <= 0:
            raise bad("max_age", f"must be > 0 seconds, got {self.max_age}")
        if not 0 <= self.iou <= 1:
            raise bad("iou", f"must be in (0, 1], or 0 for the model card's, got {self.iou}")
        if not 0 <= self.shadow_sample <= 1:
            raise bad("shadow_sample", f"must be in [0, 1], got {self.shadow_sample}")
        self.shapes = [part for item in self.shapes for part in re.split(r"[,\s]+", str(item)) if part]
        try:
            for shape in self.shapes:
                parse_shape(shape)
        except ValueError as exc:
            raise bad("shapes", str(exc)) from None
        return self

    def resolve(self, path: str) -> Path:
        return resolve_path(path)


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML file; a missing or malformed file is one ConfigError naming it."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no read permission, a binary file
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"{path}: cannot read the {what} ({reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def default_config_path(path: str | Path | None) -> str | Path | None:
    """The --config given, else configs/worker.yaml where it exists, else None (built-in defaults)."""
    if path is None and resolve_path(DEFAULT_CONFIG).exists():
        return DEFAULT_CONFIG
    return path


def redact_url(url: str) -> str:
    """Hide a password in redis://user:password@host, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def parse_shape(text: str) -> tuple[int, int]:
    """'1920x1080' or '16x9' (also '16:9') -> (width, height); only the ratio matters."""
    width, sep, height = str(text).lower().replace(":", "x").partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise ValueError(f"expected WIDTHxHEIGHT such as 16x9 or 1920x1080, got {text!r}")
    return int(width), int(height)


def parse_cpus(text: str) -> list[int]:
    """'0,2-3' -> [0, 2, 3]; '' -> []."""
    cpus: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    if any(c < 0 for c in cpus):
        raise ValueError(text)
    return cpus


def resolve_path(path: str | Path) -> Path:
    """Expand ~; a relative path that does not exist from the cwd is taken from the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if isinstance(default, list):
            if isinstance(value, str):
                return [v for v in value.split(os.pathsep) if v]
            if not isinstance(value, list):
                raise ValueError(value)
            return [str(v) for v in value]
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {key}: expected {type(default).__name__}, got {value!r}") from None


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> WorkerConfig:
    """Defaults <- YAML file <- DEER_WORKER_* environment <- explicit overrides (CLI flags)."""
    return load_settings(WorkerConfig(), path, env, overrides, env_prefix=ENV_PREFIX, source="worker.yaml")


def load_settings(config, path: str | Path | None, env: dict[str, str] | None, overrides: dict[str, Any] | None,
                  *, env_prefix: str, source: str):
    """Fill a settings dataclass (WorkerConfig, the MQTT bridge's BridgeConfig) from its defaults, the file,
    <env_prefix><KEY> variables and overrides, then its validate(source, origins)."""
    env = os.environ if env is None else env
    defaults = {f.name: getattr(config, f.name) for f in fields(config)}
    origins: dict[str, str] = {}
    if path is not None:
        path = resolve_path(path)
        source = str(path)
        data = read_yaml(path, "config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        for key, value in data.items():
            if key not in defaults:
                raise ConfigError(f"{path}: {key}: unknown setting")
            setattr(config, key, _coerce(key, value, defaults[key], source))
    for key, default in defaults.items():
        env_key = env_prefix + key.upper()
        if env_key in env:
            origins[key] = f"environment {env_key}"
            setattr(config, key, _coerce(key, env[env_key], default, origins[key]))
    for key, value in (overrides or {}).items():
        if value is not None:
            origins[key] = "command line"
            setattr(config, key, _coerce(key, value, defaults[key], origins[key]))
    return config.validate(source, origins)
