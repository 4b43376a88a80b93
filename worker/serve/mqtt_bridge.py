"""`deer-worker mqtt`: ring-mqtt snapshots in, results and Home Assistant entities out.

In: `<ring_topic>/+/camera/+/snapshot/image` (raw JPEG, QoS 1) and `.../snapshot/attributes` (JSON
`{"timestamp", "type"}`), on a persistent session (clean_session off) with manual acks: an image is
acknowledged to the broker only once Redis holds its job (or once it is known bad), so a bridge or
Redis outage loses nothing the broker kept. Pairing: a camera's latest attributes belong to its next
image when they came at most `attributes_before` s before it; an image without them waits at most
`attributes_after` s for attributes that come after it, then goes without (captured_at = receive time,
normal priority). Byte-identical images of a camera within `duplicate_window` s are enqueued once.

Out: results are read from the results STREAM from a position saved in Redis (XREAD BLOCK), so a
bridge or Redis restart loses none, and published once per job id (ids already published are kept
in Redis beside the position): `<output_prefix>/<camera>/result` (the result JSON), retained
`<output_prefix>/<camera>/deer` ON/OFF (OFF after `quiet_time` s without a deer), retained
`<output_prefix>/<camera>/confidence` (the last result's best deer confidence) and Home Assistant
discovery for both, with availability `<output_prefix>/bridge/availability` (online; the Last Will
and a clean stop say offline, and a clean stop first turns every camera OFF).

Threads: paho's network loop; `intake` (pairing, duplicates, enqueue, acks); `results` (stream ->
MQTT). The metrics/health HTTP server is the worker's (worker/serve/health.py).
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import logging
import queue
import re
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from worker import constants as C
from worker.config import WorkerConfig, load_config
from worker.errors import DeerWorkerError
from worker.jobqueue.connections import connect
from worker.jobqueue.producer import enqueue_snapshot
from worker.serve.health import HealthServer
from worker.serve.mqtt_config import BridgeConfig, check_broker_certificate, mqtt_endpoint, tls_context

log = logging.getLogger(__name__)

AVAILABILITY_ONLINE, AVAILABILITY_OFFLINE = "online", "offline"
MAX_ATTRIBUTES_BYTES = 4096  # ring-mqtt's are ~60 bytes
TOPIC_SAFE = re.compile(r"[^A-Za-z0-9_-]")
# What a message that is not enqueued (or a result not published) is counted as: the producer's own
# refusal kinds (worker/errors.py), then the bridge's.
DROP_KINDS = ("empty_input", "unsupported_format", "payload_too_large", "image_too_large", "corrupt_image",
              "bad_payload", "bad_attributes", "bad_topic", "redis_refused", "bad_result", "other")
STREAM_BATCH = 100
STOP_CHECK_MS = 1000  # XREAD BLOCK and queue waits wake at least this often to notice a stop
PUBLISHED_MEMORY = 24 * 3600  # s a published job id is remembered (results come minutes after at most)
REDIS_BACKOFF = (0.1, C.REDIS_MAX_BACKOFF)
# What the bridge publishes goes out at QoS 2: a QoS 1 message resent across a broker restart reaches
# subscribers twice, QoS 2 once (to subscribers at QoS 2; at QoS 1 a copy per their own reconnect).
OUT_QOS = 2  # first and longest wait between attempts to reach Redis


# --- pure parts: pairing and duplicates ---------------------------------------------------------------
@dataclass
class Snapshot:
    """An image on its way to the queue, with what paired with it and the MQTT messages to ack."""

    camera_id: str
    data: bytes
    received_at: float  # unix time
    acks: list[tuple[int, int]] = field(default_factory=list)  # (mid, qos) of the image and its attributes
    attributes: dict | None = None


@dataclass
class _Attributes:
    values: dict
    received_at: float  # monotonic


class Pairing:
    """Matches each camera's images with its attributes. Times are monotonic seconds."""

    def __init__(self, before: float, after: float) -> None:
        self.before, self.after = before, after
        self._latest: dict[str, _Attributes] = {}  # attributes waiting for the next image
        self._waiting: dict[str, tuple[Snapshot, float]] = {}  # an image waiting for attributes, its deadline

    def attributes(self, camera_id: str, values: dict, now: float) -> list[Snapshot]:
        waiting = self._waiting.pop(camera_id, None)
        if waiting is not None:
            waiting[0].attributes = values
            return [waiting[0]]
        self._latest[camera_id] = _Attributes(values, now)
        return []

    def image(self, snapshot: Snapshot, now: float) -> list[Snapshot]:
        ready = []
        earlier = self._waiting.pop(snapshot.camera_id, None)
        if earlier is not None:  # a second image came first: the earlier one goes without attributes
            ready.append(earlier[0])
        latest = self._latest.pop(snapshot.camera_id, None)
        if latest is not None and now - latest.received_at <= self.before:
            snapshot.attributes = latest.values
            ready.append(snapshot)
        elif self.after <= 0:
            ready.append(snapshot)
        else:
            self._waiting[snapshot.camera_id] = (snapshot, now + self.after)
        return ready

    def due(self, now: float) -> list[Snapshot]:
        """Images whose wait for attributes is over."""
        over = [camera for camera, (_, deadline) in self._waiting.items() if deadline <= now]
        return [self._waiting.pop(camera)[0] for camera in over]

    def next_deadline(self) -> float | None:
        return min((deadline for _, deadline in self._waiting.values()), default=None)

    def drain(self) -> list[Snapshot]:
        waiting = [snapshot for snapshot, _ in self._waiting.values()]
        self._waiting.clear()
        return waiting


class DuplicateFilter:
    """Byte-identical images of one camera within `window` s (ring-mqtt republishes a snapshot)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, OrderedDict[bytes, float]] = {}  # camera -> digest -> when first seen

    def seen(self, camera_id: str, data: bytes, now: float) -> bool:
        digests = self._seen.setdefault(camera_id, OrderedDict())
        while digests and next(iter(digests.values())) < now - self.window:
            digests.popitem(last=False)
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest in digests:
            return True
        digests[digest] = now
        return False


def parse_attributes(payload: bytes) -> dict:
    """ring-mqtt's snapshot attributes; ValueError when they are not a JSON object of that shape."""
    if len(payload) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"{len(payload)} bytes")
    values = json.loads(payload)
    if not isinstance(values, dict):
        raise ValueError("not a JSON object")
    timestamp = values.get("timestamp")
    if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, (int, float))
                                  or not 0 < timestamp < 1e11):
        raise ValueError(f"timestamp {timestamp!r} is not epoch seconds")
    if values.get("type") is not None and not isinstance(values["type"], str):
        raise ValueError(f"type {values['type']!r} is not a string")
    return values


def topic_id(text: str) -> str:
    """A camera id as one safe topic level and Home Assistant object id."""
    return TOPIC_SAFE.sub("_", text) or "_"


def best_deer_confidence(result: dict) -> float:
    """The confidence topic: the best detection of the classes that raised the alarm, as the worker's result
    names them (`alert_classes`); a result of an older worker, without them, means the class named deer."""
    alert = set(result.get("alert_classes") or ("deer",))
    scores = [d.get("confidence", 0.0) for d in result.get("detections") or [] if d.get("class_name") in alert]
    return max(scores, default=0.0)


# --- metrics ------------------------------------------------------------------------------------------
class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ns, reg = f"{C.METRICS_PREFIX}_mqtt", self.registry
        self.received = Counter("received", "MQTT messages received, by kind (image, attributes).",
                                ["kind"], namespace=ns, registry=reg)
        self.enqueued = Counter("enqueued", "Snapshots enqueued, by priority.", ["priority"], namespace=ns, registry=reg)
        self.duplicates = Counter("duplicates", "Byte-identical images not enqueued again.", namespace=ns, registry=reg)
        self.dropped = Counter("dropped", "Messages not enqueued or results not published, by kind.",
                               ["kind"], namespace=ns, registry=reg)
        self.published = Counter("published", "Results published on MQTT.", namespace=ns, registry=reg)
        self.reconnects = Counter("reconnects", "Connections made again after a loss, by peer (mqtt, redis).",
                                  ["peer"], namespace=ns, registry=reg)
        self.connected = Gauge("connected", "1 while connected to the broker.", namespace=ns, registry=reg)
        for kind in ("image", "attributes"):
            self.received.labels(kind)
        for priority in ("normal", "high"):
            self.enqueued.labels(priority)
        for kind in DROP_KINDS:
            self.dropped.labels(kind)
        for peer in ("mqtt", "redis"):
            self.reconnects.labels(peer)

    def drop(self, kind: str) -> None:
        self.dropped.labels(kind if kind in DROP_KINDS else "other").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# --- the bridge ---------------------------------------------------------------------------------------
class Bridge:
    def __init__(self, config: BridgeConfig, worker: WorkerConfig) -> None:
        self.config, self.worker = config, worker
        self.metrics = BridgeMetrics()
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        redis_url = config.redis_url or worker.redis_url
        self.redis = connect(redis_url, timeout=5, command_timeout=10)  # Sentinel URLs too
        keys = f"{C.MQTT_BRIDGE_KEY_PREFIX}{config.client_id}:"
        self.position_key, self.published_key, self.cameras_key = (
            keys + "position", keys + "published", keys + "cameras")
        self.prefix = config.output_prefix
        self.job_id_prefix = f"{topic_id(config.client_id)}-"  # this bridge's jobs; see publish_other_results
        self.availability_topic = f"{self.prefix}/bridge/availability"
        self._ever_connected = False
        self._startup: list[tuple[str, str, bool]] = []  # published on the first connection
        self._acked: set[int] = set()  # puback'd mids of our own publishes
        self._publish_done = threading.Condition()
        self._announced: set[str] = set()  # cameras whose discovery config went out this run
        self._deer_on: dict[str, float] = {}  # camera -> monotonic time of its last deer
        self._published_ids: OrderedDict[str, float] = OrderedDict()
        # Where the stream is read from, and what was published but is not saved in Redis yet (a Redis
        # lost between the broker's ack and the save): saved before the next read once Redis is back.
        self._position: str | None = None
        self._unsaved_position: str | None = None
        self._unsaved_ids: dict[str, float] = {}
        self.client = self._build_client()

    # --- MQTT connection ---
    def _build_client(self) -> mqtt.Client:
        endpoint = mqtt_endpoint(self.config.mqtt_url)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.config.client_id,
                             clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls:
            client.tls_set_context(tls_context(self.config))
        client.will_set(self.availability_topic, AVAILABILITY_OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=int(REDIS_BACKOFF[1]) or 1)
        client.max_queued_messages_set(0)  # keep every result until the broker has it
        client.enable_logger(logging.getLogger("paho"))  # errors inside our callbacks reach the log
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_message, client.on_publish = self._on_message, self._on_publish
        client.on_socket_open = self._on_socket_open
        self.endpoint = endpoint
        return client

    @staticmethod
    def _on_socket_open(client, userdata, sock) -> None:
        """No Nagle on the bridge's socket: paho leaves it on, and a result published right behind
        another small packet (its QoS 2 PUBREL, the confidence after it) would wait for the broker's ACK."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):  # not a TCP socket
            pass

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.endpoint.redacted(), reason_code)
            return
        if self._ever_connected:
            self.metrics.reconnects.labels("mqtt").inc()
        self._ever_connected = True
        base = f"{self.config.ring_topic}/+/camera/+/snapshot"
        client.subscribe([(f"{base}/image", 1), (f"{base}/attributes", 1)])
        for topic, payload, retain in self._startup:  # before "online": no stale ON shows as live
            client.publish(topic, payload, qos=OUT_QOS, retain=retain)
        self._startup = []
        client.publish(self.availability_topic, AVAILABILITY_ONLINE, qos=1, retain=True)
        self.metrics.connected.set(1)
        self.connected.set()
        log.info("connected to %s (session present: %s)", self.endpoint.redacted(), flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.metrics.connected.set(0)
        if not self.stopping.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self.inbox.put((message, time.time(), time.monotonic()))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._publish_done:
            self._acked.add(mid)
            self._publish_done.notify_all()

    def ack(self, acks: list[tuple[int, int]]) -> None:
        for mid, qos in acks:
            if qos > 0:
                self.client.ack(mid, qos)

    def deliver(self, messages: list[tuple[str, str | bytes, bool]]) -> bool:
        """Publish at QoS 2 and wait for the broker's acks (paho resends across reconnects);
        False when the bridge stopped first."""
        mids = [self.client.publish(topic, payload, qos=OUT_QOS, retain=retain).mid
                for topic, payload, retain in messages]
        with self._publish_done:
            while not self._acked.issuperset(mids):
                if self.stopping.is_set() and not self.connected.is_set():
                    return False
                self._publish_done.wait(STOP_CHECK_MS / 1000)
            self._acked.difference_update(mids)
        return True

    # --- in: intake thread ---
    def intake(self) -> None:
        pairing = Pairing(self.config.attributes_before, self.config.attributes_after)
        duplicates = DuplicateFilter(self.config.duplicate_window)
        while not self.stopping.is_set():
            deadline = pairing.next_deadline()
            wait = STOP_CHECK_MS / 1000 if deadline is None else max(0.0, min(deadline - time.monotonic(), 1.0))
            try:
                message, received_at, now = self.inbox.get(timeout=wait)
            except queue.Empty:
                message = None
            if message is not None:
                for snapshot in self.receive(message, received_at, now, pairing, duplicates):
                    self.enqueue(snapshot)
            for snapshot in pairing.due(time.monotonic()):
                self.enqueue(snapshot)
        # Images still waiting for attributes are not acked: the broker delivers them again next time.

    def receive(self, message: mqtt.MQTTMessage, received_at: float, now: float, pairing: Pairing,
                duplicates: DuplicateFilter) -> list[Snapshot]:
        levels = message.topic.split("/")
        ack = [(message.mid, message.qos)]
        base = self.config.ring_topic.split("/")
        # <ring_topic>/<location>/camera/<device id>/snapshot/{image,attributes}
        if levels[:len(base)] != base or len(levels) != len(base) + 5 or levels[len(base) + 1] != "camera" \
                or levels[-2] != "snapshot" or levels[-1] not in ("image", "attributes"):
            log.warning("message on %s dropped: not a ring-mqtt snapshot topic", message.topic)
            self.metrics.drop("bad_topic")
            self.ack(ack)
            return []
        camera_id, what = levels[len(base) + 2], levels[-1]
        if what == "attributes":
            self.metrics.received.labels("attributes").inc()
            try:
                values = parse_attributes(message.payload)
            except (ValueError, UnicodeDecodeError) as exc:
                log.warning("camera %s: attributes dropped, not ring-mqtt's JSON: %s", camera_id, exc)
                self.metrics.drop("bad_attributes")
                self.ack(ack)
                return []
            self.ack(ack)  # attributes are state, not work: a lost one only costs an image its type
            return pairing.attributes(camera_id, values, now)
        self.metrics.received.labels("image").inc()
        log.debug("camera %s: image, %d bytes (mid %d, redelivered %s)", camera_id, len(message.payload),
                  message.mid, message.dup)
        if duplicates.seen(camera_id, message.payload, now):
            self.metrics.duplicates.inc()
            self.ack(ack)
            return []
        return pairing.image(Snapshot(camera_id, message.payload, received_at, ack), now)

    def enqueue(self, snapshot: Snapshot) -> None:
        """Into Redis, then ack; retried while Redis is unreachable (the message stays unacked)."""
        attributes = snapshot.attributes or {}
        kind = attributes.get("type")
        priority = "high" if kind in self.config.high_priority_types else "normal"
        captured_at = attributes.get("timestamp") or snapshot.received_at
        job_id = f"{self.job_id_prefix}{uuid.uuid4().hex}"
        delay = REDIS_BACKOFF[0]
        while True:
            try:
                enqueue_snapshot(self.redis, snapshot.data, snapshot.camera_id, captured_at=float(captured_at),
                                 job_id=job_id, priority=priority, queue=self.worker.queue,
                                 max_snapshot_bytes=self.worker.max_snapshot_bytes,
                                 job_timeout=self.worker.job_timeout, result_ttl=self.worker.result_ttl,
                                 failure_ttl=self.worker.failure_ttl, queued_ttl=self.worker.queued_ttl,
                                 retries=self.worker.retries)
            except DeerWorkerError as error:  # not an image a worker would take: counted by its kind
                log.warning("camera %s: snapshot dropped: %s: %s", snapshot.camera_id, error.kind, error)
                self.metrics.drop(error.kind)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if self.stopping.is_set():
                    return  # unacked: the broker delivers it again
                log.warning("Redis unreachable (%s); snapshot of %s held, retrying in %.1f s",
                            exc, snapshot.camera_id, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, REDIS_BACKOFF[1])
                continue
            except redis.ResponseError as exc:  # Redis answered no (out of memory, read-only, ACL)
                log.error("camera %s: Redis refused the snapshot's job: %s", snapshot.camera_id, exc)
                self.metrics.drop("redis_refused")
            else:
                self.metrics.enqueued.labels(priority).inc()
            self.ack(snapshot.acks)
            return

    # --- out: results thread ---
    def results(self) -> None:
        stream = self.worker.results_stream
        delay = REDIS_BACKOFF[0]
        lost = False
        while not self.stopping.is_set():
            try:
                if self._position is None:
                    self._position = self._start_position(stream)
                self.save_position()  # what a lost Redis kept from being saved
                block = STOP_CHECK_MS
                if self._deer_on:
                    next_off = min(self._deer_on.values()) + self.config.quiet_time - time.monotonic()
                    block = max(1, min(block, int(next_off * 1000) + 1))
                reply = self.redis.xread({stream: self._position}, count=STREAM_BATCH, block=block)
                if lost:
                    log.info("Redis is back; results resume from %s", self._position)
                    self.metrics.reconnects.labels("redis").inc()
                    lost, delay = False, REDIS_BACKOFF[0]
                for _, entries in reply or []:
                    if entries:
                        self.publish_results(entries)
                self.turn_off_quiet_cameras()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not lost:
                    log.warning("Redis unreachable (%s); results resume from the saved position", exc)
                lost = True
                self.stopping.wait(delay)
                delay = min(delay * 2, REDIS_BACKOFF[1])

    def _start_position(self, stream: str) -> str:
        """The saved position, else the stream's end now (a first start publishes no history)."""
        saved = self.redis.get(self.position_key)
        since = time.time() - PUBLISHED_MEMORY
        for job_id, at in self.redis.zrangebyscore(self.published_key, since, "+inf", withscores=True):
            self._published_ids[job_id.decode()] = at
        if saved:
            return saved.decode()
        last = self.redis.xrevrange(stream, count=1)
        position = last[0][0].decode() if last else "0-0"
        self.redis.set(self.position_key, position)
        return position

    def publish_results(self, entries) -> None:
        """Publish a batch of stream entries, remember the position and the job ids in this process,
        then save both in Redis in one step.

        Remembered before the save: a Redis lost (restarted, failed over) after the broker took the
        batch and before the save must not make this run read the batch again and publish it twice
        (what happened across a Redis restart); the save is retried before the next read."""
        messages, published = [], {}
        for entry_id, fields in entries:
            try:
                result = json.loads(fields[b"result"])
                job_id, camera_id = str(result["job_id"]), str(result.get("camera_id") or "")
            except (KeyError, ValueError, TypeError):
                self.metrics.drop("bad_result")
                continue
            if job_id in self._published_ids or job_id in published:
                continue  # a retried job's second message, or one published before a restart
            if not camera_id or (not self.config.publish_other_results and not job_id.startswith(self.job_id_prefix)):
                continue
            messages.extend(self.result_messages(camera_id, result, fields[b"result"]))
            published[job_id] = time.time()
        last_id = entries[-1][0].decode()
        if messages and not self.deliver(messages):
            return  # stopped before the broker had them: read again from the saved position next run
        self.metrics.published.inc(len(published))
        self._position = last_id
        self._published_ids.update(published)
        self._unsaved_ids.update(published)
        self._unsaved_position = last_id
        while self._published_ids and next(iter(self._published_ids.values())) < time.time() - PUBLISHED_MEMORY:
            self._published_ids.popitem(last=False)
        self.save_position()

    def save_position(self) -> None:
        """The position and the job ids published since the last save, in one transaction."""
        if self._unsaved_position is None:
            return
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.position_key, self._unsaved_position)
            if self._unsaved_ids:
                pipe.zadd(self.published_key, self._unsaved_ids)
                pipe.zremrangebyscore(self.published_key, "-inf", time.time() - PUBLISHED_MEMORY)
            pipe.execute()
        self._unsaved_position, self._unsaved_ids = None, {}

    def result_messages(self, camera_id: str, result: dict, raw: bytes) -> list[tuple[str, str | bytes, bool]]:
        camera = topic_id(camera_id)
        messages = self.announce(camera)
        messages.append((f"{self.prefix}/{camera}/result", raw, False))
        if result.get("status") == "ok":
            messages.append((f"{self.prefix}/{camera}/confidence", f"{best_deer_confidence(result):.4f}", True))
            if result.get("deer_detected"):
                if camera not in self._deer_on:
                    messages.append((f"{self.prefix}/{camera}/deer", "ON", True))
                self._deer_on[camera] = time.monotonic()
        return messages

    def announce(self, camera: str) -> list[tuple[str, str, bool]]:
        """Home Assistant discovery for a camera not announced yet this run (retained)."""
        if camera in self._announced:
            return []
        self.redis.sadd(self.cameras_key, camera)  # first: a Redis lost here must not skip the discovery
        self._announced.add(camera)
        if not self.config.discovery:
            return []
        node = topic_id(f"{self.prefix}_{camera}").replace("-", "_")  # unique per bridge and camera
        device = {"identifiers": [node], "name": f"Deer detector {camera}",
                  "manufacturer": "deer-worker", "model": "deer-worker MQTT bridge"}
        common = {"availability_topic": self.availability_topic, "payload_available": AVAILABILITY_ONLINE,
                  "payload_not_available": AVAILABILITY_OFFLINE, "device": device,
                  "json_attributes_topic": f"{self.prefix}/{camera}/result"}
        deer = {**common, "name": "Deer", "unique_id": f"{node}_deer", "object_id": f"{node}_deer",
                "state_topic": f"{self.prefix}/{camera}/deer", "payload_on": "ON", "payload_off": "OFF",
                "device_class": "occupancy"}
        confidence = {**common, "name": "Deer confidence", "unique_id": f"{node}_confidence",
                      "object_id": f"{node}_confidence", "state_topic": f"{self.prefix}/{camera}/confidence",
                      "state_class": "measurement", "icon": "mdi:deer"}
        root = self.config.discovery_prefix
        return [(f"{root}/binary_sensor/{node}/deer/config", json.dumps(deer), True),
                (f"{root}/sensor/{node}/confidence/config", json.dumps(confidence), True)]

    def turn_off_quiet_cameras(self) -> None:
        now = time.monotonic()
        quiet = [camera for camera, last in self._deer_on.items() if now - last >= self.config.quiet_time]
        if quiet and self.deliver([(f"{self.prefix}/{camera}/deer", "OFF", True) for camera in quiet]):
            for camera in quiet:
                self._deer_on.pop(camera, None)

    def known_cameras_reset(self) -> list[tuple[str, str, bool]]:
        """For the first connection: cameras of an earlier run announced again and OFF (a retained ON
        must not outlive the run that set it)."""
        messages = []
        for camera in sorted(c.decode() for c in self.redis.smembers(self.cameras_key)):
            messages.extend(self.announce(camera))
            messages.append((f"{self.prefix}/{camera}/deer", "OFF", True))
        return messages

    # --- lifecycle ---
    def run(self) -> int:
        if self.endpoint.tls:
            check_broker_certificate(self.endpoint, self.config)  # a wrong CA: one line, exit 2
        health = None
        if self.config.metrics_port:
            health = HealthServer(self.metrics, self.config.metrics_host, self.config.metrics_port,
                                  redis_ping=self._redis_ping, ready=self.connected.is_set).start()
        log.info("bridge: %s -> Redis %s, queue %s; results from %s", self.endpoint.redacted(),
                 self.redis.connection_pool.connection_kwargs.get("host", "?"), self.worker.queue,
                 self.worker.results_stream)
        self._startup = self._until_redis(self.known_cameras_reset) or []
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=self.config.keepalive)
        self.client.loop_start()
        threads = [threading.Thread(target=self.intake, name="intake", daemon=True),
                   threading.Thread(target=self.results, name="results", daemon=True)]
        try:
            while not self.connected.wait(STOP_CHECK_MS / 1000):
                if self.stopping.is_set():
                    return 0
            for thread in threads:
                thread.start()
            self.stopping.wait()
        finally:
            self.stopping.set()
            for thread in threads:
                if thread.is_alive():
                    thread.join()
            self._save_on_stop()
            self.clean_stop()
            if health is not None:
                health.stop()
        return 0

    def _until_redis(self, step) -> None:
        delay = REDIS_BACKOFF[0]
        while not self.stopping.is_set():
            try:
                return step()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, REDIS_BACKOFF[1])

    def _save_on_stop(self) -> None:
        try:
            self.save_position()
        except redis.RedisError as exc:  # the next run publishes the unsaved batch again (README)
            log.warning("stopping with published results not saved in Redis (%s); the next start repeats them", exc)

    def clean_stop(self) -> None:
        """Every camera OFF, then offline (retained), then a clean disconnect (no Last Will)."""
        if self.connected.is_set():
            cameras = sorted(self._announced | set(self._deer_on))
            infos = [self.client.publish(f"{self.prefix}/{camera}/deer", "OFF", qos=1, retain=True)
                     for camera in cameras]
            infos.append(self.client.publish(self.availability_topic, AVAILABILITY_OFFLINE, qos=1, retain=True))
            for info in infos:
                try:
                    info.wait_for_publish(timeout=5)
                except (RuntimeError, ValueError):
                    break
        self.client.disconnect()
        self.client.loop_stop()

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def _redis_ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False


def run_bridge(config: BridgeConfig, worker: WorkerConfig | None = None) -> int:
    worker = worker or load_config(config.worker_config)
    bridge = Bridge(config, worker)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: every thread's stack in the log, for a stuck bridge
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, bridge.stop)
    return bridge.run()
