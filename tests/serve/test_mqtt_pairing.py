"""The bridge's pure parts: attribute pairing, duplicate suppression, attribute parsing, the broker
URL and the settings file (no broker, no Redis)."""

from __future__ import annotations

import pytest

from worker.errors import ConfigError
from worker.serve.mqtt_bridge import DuplicateFilter, Pairing, Snapshot, best_deer_confidence, parse_attributes, topic_id
from worker.serve.mqtt_config import load_bridge_config, mqtt_endpoint

MOTION = {"timestamp": 1764201600, "type": "motion"}


def snap(camera="cam", data=b"jpeg") -> Snapshot:
    return Snapshot(camera, data, received_at=1764201601.0)


def test_attributes_before_the_image_within_the_window_are_its_own():
    pairing = Pairing(before=5.0, after=1.0)
    assert pairing.attributes("cam", MOTION, now=100.0) == []
    [ready] = pairing.image(snap(), now=104.9)
    assert ready.attributes == MOTION


def test_attributes_older_than_the_window_are_not_and_the_image_waits_for_later_ones():
    pairing = Pairing(before=5.0, after=1.0)
    pairing.attributes("cam", MOTION, now=100.0)
    assert pairing.image(snap(), now=105.1) == []  # too old: waits for attributes that come after
    assert pairing.next_deadline() == pytest.approx(106.1)
    [ready] = pairing.attributes("cam", {"type": "ding"}, now=105.5)
    assert ready.attributes == {"type": "ding"} and pairing.next_deadline() is None


def test_an_image_whose_attributes_never_come_goes_without_them_at_its_deadline():
    pairing = Pairing(before=5.0, after=1.0)
    pairing.image(snap(), now=10.0)
    assert pairing.due(10.99) == []
    [ready] = pairing.due(11.0)
    assert ready.attributes is None


def test_attributes_are_per_camera_and_used_once():
    pairing = Pairing(before=5.0, after=0.0)
    pairing.attributes("a", MOTION, now=1.0)
    [other] = pairing.image(snap("b"), now=1.1)
    assert other.attributes is None  # camera b does not take camera a's attributes
    [first] = pairing.image(snap("a"), now=1.2)
    [second] = pairing.image(snap("a"), now=1.3)
    assert first.attributes == MOTION and second.attributes is None


def test_a_second_image_releases_the_first_without_attributes():
    pairing = Pairing(before=5.0, after=1.0)
    pairing.image(snap(data=b"1"), now=1.0)
    [first] = pairing.image(snap(data=b"2"), now=1.5)
    assert first.data == b"1" and first.attributes is None
    [second] = pairing.attributes("cam", MOTION, now=1.6)
    assert second.data == b"2" and second.attributes == MOTION


def test_duplicates_are_per_camera_and_within_the_window():
    seen = DuplicateFilter(window=60.0)
    assert not seen.seen("a", b"x", 0.0)
    assert seen.seen("a", b"x", 59.0)
    assert not seen.seen("b", b"x", 59.0)  # another camera's identical bytes are its own snapshot
    assert not seen.seen("a", b"y", 59.5)
    assert not seen.seen("a", b"x", 60.5)  # the window passed: enqueued again


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'{"timestamp": "yesterday"}',
                                     b'{"timestamp": true}', b'{"type": 3}', b"{" + b" " * 5000 + b"}"])
def test_attributes_that_are_not_ring_mqtts_are_refused(payload):
    with pytest.raises(ValueError):
        parse_attributes(payload)


def test_ring_mqtt_attributes_parse():
    assert parse_attributes(b'{"timestamp": 1764201600, "type": "on-demand"}') == \
        {"timestamp": 1764201600, "type": "on-demand"}
    assert parse_attributes(b"{}") == {}


def test_topic_ids_and_best_confidence():
    assert topic_id("10cea9e4511f") == "10cea9e4511f" and topic_id("a/b+#c") == "a_b__c"
    result = {"detections": [{"class_name": "deer", "confidence": 0.4}, {"class_name": "person", "confidence": 0.9},
                             {"class_name": "deer", "confidence": 0.7}]}
    assert best_deer_confidence(result) == 0.7 and best_deer_confidence({"detections": []}) == 0.0


def test_broker_urls():
    plain = mqtt_endpoint("mqtt://broker")
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker", 1883, False, None)
    tls = mqtt_endpoint("mqtts://bridge:p%40ss@broker.lan:8884")
    assert (tls.host, tls.port, tls.tls, tls.username, tls.password) == ("broker.lan", 8884, True, "bridge", "p@ss")
    assert tls.redacted() == "mqtts://bridge:***@broker.lan:8884"
    for bad in ("http://broker", "mqtt://", "mqtt://broker:99999", "mqtt://broker/topic"):
        with pytest.raises(ValueError):
            mqtt_endpoint(bad)


@pytest.mark.parametrize("text, named", [
    ("mqtt_url: http://x\n", "mqtt_url"), ("quiet_time: -1\n", "quiet_time"), ("ring_topic: ring/#\n", "ring_topic"),
    ("keepalive: 1\n", "keepalive"), ("mqtt_ca_file: /nonexistent/ca.pem\n", "mqtt_ca_file"),
    ("colour: blue\n", "colour"), ("discovery: maybe\n", "discovery")])
def test_a_bad_bridge_setting_is_named(tmp_path, text, named):
    path = tmp_path / "mqtt.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{named}"):
        load_bridge_config(path, env={})


def test_the_shipped_file_loads_and_the_environment_beats_it():
    config = load_bridge_config("configs/mqtt.yaml", env={"DEER_MQTT_QUIET_TIME": "30"})
    assert config.quiet_time == 30.0 and config.ring_topic == "ring"
    with pytest.raises(ConfigError, match="environment DEER_MQTT_MQTT_URL: mqtt_url"):
        load_bridge_config("configs/mqtt.yaml", env={"DEER_MQTT_MQTT_URL": "tcp://x"})
