"""configs/mqtt.yaml -> BridgeConfig: the MQTT bridge's settings, typed and checked like worker.yaml.

Precedence as for the worker: defaults <- the file <- DEER_MQTT_<KEY> environment <- command line.
Queue, results stream and snapshot limits are not repeated here: they come from the worker.yaml
named by `worker_config`, so the bridge and the workers cannot disagree on them.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from worker.config import load_settings, resolve_path
from worker.errors import ConfigError

DEFAULT_BRIDGE_CONFIG = "configs/mqtt.yaml"
ENV_PREFIX = "DEER_MQTT_"
MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


@dataclass
class BridgeConfig:
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_ca_file: str = ""  # CA bundle for mqtts:// (empty: the system's)
    client_id: str = "deer-worker-bridge"  # also the persistent session's name on the broker
    keepalive: int = 30
    ring_topic: str = "ring"  # ring-mqtt's base topic (its `ring_topic`)
    output_prefix: str = "deer-worker"
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    attributes_before: float = 5.0  # s: attributes that came at most this long before an image are its own
    attributes_after: float = 1.0  # s: an image without such attributes waits at most this long for them
    duplicate_window: float = 60.0  # s: a byte-identical image of one camera within this is not enqueued again
    quiet_time: float = 120.0  # s without a deer before a camera's state goes back to OFF
    high_priority_types: list[str] = field(default_factory=lambda: ["motion", "ding", "on-demand"])
    publish_other_results: bool = True  # results of jobs other producers enqueued go out too
    worker_config: str = "configs/worker.yaml"  # where the queue, stream and snapshot limits come from
    redis_url: str = ""  # empty: the worker config's
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9830  # 0 = off

    def validate(self, source: str, origins: dict[str, str]) -> BridgeConfig:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"{origins.get(key, source)}: {key}: {why}")

        try:
            mqtt_endpoint(self.mqtt_url)
        except ValueError as exc:
            raise bad("mqtt_url", str(exc)) from None
        for key in ("attributes_before", "attributes_after", "duplicate_window", "quiet_time"):
            if not 0 <= getattr(self, key) <= 86400:
                raise bad(key, f"expected seconds in 0..86400, got {getattr(self, key)}")
        if not 5 <= self.keepalive <= 3600:
            raise bad("keepalive", f"expected seconds in 5..3600, got {self.keepalive}")
        for key in ("ring_topic", "output_prefix", "discovery_prefix", "client_id"):
            value = getattr(self, key)
            if not value or any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/"):
                raise bad(key, f"expected a topic prefix without + # or outer slashes, got {value!r}")
        if not 0 <= self.metrics_port <= 65535:
            raise bad("metrics_port", f"expected 0..65535, got {self.metrics_port}")
        if self.mqtt_ca_file and not resolve_path(self.mqtt_ca_file).is_file():
            raise bad("mqtt_ca_file", f"{self.mqtt_ca_file}: no such file")
        return self


@dataclass(frozen=True)
class MqttEndpoint:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    def redacted(self) -> str:
        user = f"{self.username}{':***' if self.password else ''}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def mqtt_endpoint(url: str) -> MqttEndpoint:
    """mqtt://[user[:password]@]host[:port] or mqtts://...; user and password may be %-encoded."""
    parts = urlsplit(url)
    if parts.scheme not in MQTT_SCHEMES:
        raise ValueError(f"expected mqtt:// or mqtts://, got {url.split('://')[0]!r}://")
    if not parts.hostname:
        raise ValueError("no host")
    try:
        port = parts.port or MQTT_SCHEMES[parts.scheme]
    except ValueError:
        raise ValueError("the port is not a number in 0..65535") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("expected no path or query after the host")
    return MqttEndpoint(parts.hostname, port, parts.scheme == "mqtts",
                        unquote(parts.username) if parts.username else None,
                        unquote(parts.password) if parts.password is not None else None)


def tls_context(config: BridgeConfig) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name, against mqtt_ca_file when given."""
    return ssl.create_default_context(cafile=str(resolve_path(config.mqtt_ca_file)) if config.mqtt_ca_file else None)


def check_broker_certificate(endpoint: MqttEndpoint, config: BridgeConfig, timeout: float = 5.0) -> None:
    """For mqtts://: one TLS handshake with the broker before the bridge starts. A certificate that does
    not verify (wrong CA, wrong host name, expired) is a ConfigError, one line; a broker not reachable
    yet is left to the reconnect loop."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            with tls_context(config).wrap_socket(sock, server_hostname=endpoint.host):
                pass
    except ssl.SSLCertVerificationError as exc:
        trusted = f"mqtt_ca_file {config.mqtt_ca_file}" if config.mqtt_ca_file else "the system's CAs"
        raise ConfigError(f"broker {endpoint.redacted()}: TLS certificate not trusted "
                          f"({exc.verify_message or exc.reason}; checked against {trusted})") from None
    except OSError:
        return


def load_bridge_config(path: str | Path | None = None, env: dict[str, str] | None = None,
                       overrides: dict[str, Any] | None = None) -> BridgeConfig:
    return load_settings(BridgeConfig(), path, env, overrides, env_prefix=ENV_PREFIX, source="mqtt.yaml")
