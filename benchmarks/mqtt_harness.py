"""What the MQTT bridge's tests and benchmarks/mqtt_bridge.py share: a private Mosquitto on a free
loopback port (persistent, so a restart keeps sessions and queued messages), a ring-mqtt stand-in
that publishes snapshots as ring-mqtt does, a recorder of what the bridge publishes, and the bridge
as a `deer-worker mqtt` subprocess.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "reliability"))

from harness import free_port, wait_for  # noqa: E402

RING = "ring"
LOCATION = "loc1"


class Mosquitto:
    """mosquitto -c <generated conf>, listening on 127.0.0.1:<free port> only."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, port: int | None = None,
                 tls=None) -> None:
        """tls: a harness.TlsFiles (ca, cert, key): the listener speaks TLS only (mqtts://)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users = users or {}
        self.tls = tls
        self.proc: subprocess.Popen | None = None

    def _write_conf(self) -> Path:
        # user: mosquitto started as root drops to user mosquitto, who cannot write this folder
        lines = [f"listener {self.port} 127.0.0.1", f"user {getpass.getuser()}", "persistence true", f"persistence_location {self.workdir}/",
                 f"log_dest file {self.workdir / 'mosquitto.log'}", "max_queued_messages 100000",
                 "autosave_interval 1",
                 "set_tcp_nodelay true"]  # as README advises: no Nagle delay on small MQTT packets
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}"]
        if self.users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines += ["allow_anonymous true"]
        path = self.workdir / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self._write_conf())], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, timeout, f"mosquitto on {self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistence file (sessions, queued messages) on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{auth}127.0.0.1:{self.port}"


def connect(port: int, client_id: str, *, clean: bool = True, user: str | None = None,
            password: str | None = None, subscribe=(), ca: Path | None = None) -> mqtt.Client:
    """A connected client (TLS when `ca` is given); `subscribe` filters are (re)subscribed at QoS 2
    on every connection."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    if user:
        client.username_pw_set(user, password)
    if ca:
        client.tls_set(ca_certs=str(ca))
    client.reconnect_delay_set(0.1, 1)
    client.max_queued_messages_set(0)
    connected = threading.Event()

    def on_connect(client, *args) -> None:
        for topic in subscribe:
            client.subscribe(topic, qos=2)
        connected.set()

    client.on_connect = on_connect
    client.connect_async("127.0.0.1", port, keepalive=10)
    client.loop_start()
    if not connected.wait(10):
        raise TimeoutError(f"no MQTT connection to {port}")
    return client


class Recorder:
    """Everything published under the given filters, in arrival order: (topic, payload bytes, retain)."""

    def __init__(self, port: int, filters=("#",), **auth) -> None:
        self.messages: list[tuple[str, bytes, bool, float]] = []
        self.lock = threading.Condition()
        # a persistent session: what is published while a broker restart parts us is kept for us
        self.client = connect(port, f"recorder-{os.getpid()}-{time.monotonic_ns()}", clean=False,
                              subscribe=filters, **auth)
        self.client.on_message = self._on_message
        time.sleep(0.2)  # the SUBACKs: nothing published after this is missed

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload, bool(message.retain), time.monotonic()))
            self.lock.notify_all()

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [payload for t, payload, _, _ in self.messages if t == topic]

    def results(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _, _ in self.messages if t.endswith("/result")]

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                       f"got {[(t, p[:80]) for t, p, _, _ in self.messages[-10:]]}")
                self.lock.wait(min(left, 0.2))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RingCamera:
    """Publishes as ring-mqtt does: the raw JPEG on .../snapshot/image and JSON on .../snapshot/attributes."""

    def __init__(self, client: mqtt.Client, device_id: str, location: str = LOCATION, ring_topic: str = RING):
        self.client, self.device_id = client, device_id
        self.base = f"{ring_topic}/{location}/camera/{device_id}/snapshot"

    def image(self, data: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(f"{self.base}/image", data, qos=1)

    def attributes(self, kind: str | None, timestamp: float | None = None, raw: bytes | None = None):
        body = raw if raw is not None else json.dumps({k: v for k, v in (("timestamp", timestamp), ("type", kind))
                                                       if v is not None})
        return self.client.publish(f"{self.base}/attributes", body, qos=1)


def bridge_config(path: Path, broker: Mosquitto, redis_url: str, *, metrics_port: int = 0, **settings) -> Path:
    """A configs/mqtt.yaml for a test: the worker config's redis/queue/stream come from DEER_WORKER_*."""
    values = {"mqtt_url": broker.url(), "redis_url": redis_url, "metrics_port": metrics_port,
              "client_id": f"bridge-{path.parent.name}"[:64], **settings}
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()))
    return path


class BridgeProcess:
    """`deer-worker mqtt --config FILE` in a process group of its own, logging to a file."""

    def __init__(self, config: Path, env: dict[str, str], log_file: Path, log_level: str = "INFO") -> None:
        self.config, self.env, self.log_file, self.log_level = config, env, log_file, log_level
        self.proc: subprocess.Popen | None = None

    def start(self) -> BridgeProcess:
        out = open(self.log_file, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "--log-level", self.log_level, "mqtt",
                                      "--config", str(self.config)],
                                     cwd=ROOT, env=self.env, stdout=out, stderr=out, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
