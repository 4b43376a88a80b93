"""The deliberate breaks the MQTT bridge's and the zones' tests catch (issue 15), run with run.py's
machinery, on issue 15's own files only:

    .venv/bin/python tests/mutations/mqtt_breaks.py [--only NAME] [--list] [--no-baseline]

The first ones are pure (zones geometry and parsing, pairing, duplicates, settings); the bridge ones
each start a private Mosquitto, Redis, worker and bridge (about a minute apiece on a busy host).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

ZONES, PAIRING, BRIDGE = "tests/test_zones.py::", "tests/serve/test_mqtt_pairing.py::", "tests/serve/test_mqtt_bridge.py::"
Z, B, CFG = "worker/zones.py", "worker/serve/mqtt_bridge.py", "worker/serve/mqtt_config.py"

MQTT_BREAKS = [
    # --- zones ----------------------------------------------------------------------------------------
    Break("zone-edge-is-outside", Z, "    return on_edge | (crossings % 2 == 1)", "    return crossings % 2 == 1",
          ZONES + "test_points_inside_outside_and_on_the_edge", "a point on a zone's edge is outside it"),
    Break("zone-rule-always-bottom", Z, 'y = xyxy[:, 3] if rule == "bottom_center" else', "y = xyxy[:, 3] if True else",
          ZONES + "test_the_rule_decides_which_zone_a_tall_box_is_in", "zone_rule center is ignored"),
    Break("zone-ignore-keeps", Z, "            ignored |= inside[zone.name]", "            pass",
          ZONES + "test_ignore_zones_drop_detections_and_include_zones_name_the_rest",
          "ignore zones no longer drop detections"),
    Break("zone-normalized-unscaled", Z, "return points * (width, height) if self.normalized else points",
          "return points", ZONES + "test_normalized_zones_scale_with_the_image",
          "normalized zones are taken as pixels"),
    Break("zone-normalized-range-unchecked", "worker/cameras.py",
          "    if normalized and not all(-1e-9 <= v <= 1.0 + 1e-9 for point in points for v in point):",
          "    if False:", ZONES + "test_a_bad_zone_is_named[camera3-zones.z]",
          "a normalized zone outside 0..1 loads"),
    Break("zone-require-without-include", "worker/cameras.py",
          "    if settings.require_zone and not any(not zone.ignore for zone in settings.zones):",
          "    if False:", ZONES + "test_a_bad_zone_is_named[camera7-require_zone]",
          "require_zone without an include zone loads (no deer could ever count)"),
    # --- pairing, duplicates, settings ------------------------------------------------------------------
    Break("pairing-before-window-unbounded", B, "if latest is not None and now - latest.received_at <= self.before:",
          "if latest is not None:",
          PAIRING + "test_attributes_older_than_the_window_are_not_and_the_image_waits_for_later_ones",
          "stale attributes pair with a much later image"),
    Break("pairing-late-attributes-ignored", B,
          "        waiting = self._waiting.pop(camera_id, None)\n        if waiting is not None:",
          "        waiting = None\n        if waiting is not None:",
          PAIRING + "test_attributes_older_than_the_window_are_not_and_the_image_waits_for_later_ones",
          "attributes published after the image are never paired"),
    Break("pairing-attributes-reused", B, "        latest = self._latest.pop(snapshot.camera_id, None)",
          "        latest = self._latest.get(snapshot.camera_id)",
          PAIRING + "test_attributes_are_per_camera_and_used_once", "one attributes message serves many images"),
    Break("duplicates-across-cameras", B, "digests = self._seen.setdefault(camera_id, OrderedDict())",
          'digests = self._seen.setdefault("", OrderedDict())',
          PAIRING + "test_duplicates_are_per_camera_and_within_the_window",
          "two cameras' identical bytes count as one snapshot"),
    Break("duplicates-forever", B, "        while digests and next(iter(digests.values())) < now - self.window:",
          "        while False:", PAIRING + "test_duplicates_are_per_camera_and_within_the_window",
          "a snapshot is suppressed after its window"),
    Break("attributes-timestamp-unchecked", B,
          "    if timestamp is not None and (isinstance(timestamp, bool)", "    if False and (isinstance(timestamp, bool)",
          PAIRING + 'test_attributes_that_are_not_ring_mqtts_are_refused[{"timestamp": "yesterday"}]',
          "a text timestamp reaches captured_at"),
    Break("mqtts-without-tls", CFG, 'parts.scheme == "mqtts",', "False,", PAIRING + "test_broker_urls",
          "mqtts:// connects in clear text"),
    # --- the bridge, end to end -------------------------------------------------------------------------
    Break("bridge-no-duplicate-check", B, "        if duplicates.seen(camera_id, message.payload, now):",
          "        if False:", BRIDGE + "test_identical_images_are_enqueued_once",
          "ring-mqtt's republished snapshot is inferred twice"),
    Break("bridge-gives-up-on-redis", B, "                    return  # unacked: the broker delivers it again\n",
          "                    return  # unacked: the broker delivers it again\n                self.ack(snapshot.acks)\n"
          "                return\n", BRIDGE + "test_a_redis_restart_mid_stream_loses_nothing",
          "a snapshot that meets a Redis restart is acked and lost"),
    Break("bridge-remembers-only-what-redis-saved", B,
          "        self._position = last_id\n        self._published_ids.update(published)\n"
          "        self._unsaved_ids.update(published)\n        self._unsaved_position = last_id\n"
          "        while self._published_ids and next(iter(self._published_ids.values())) < time.time() - PUBLISHED_MEMORY:\n"
          "            self._published_ids.popitem(last=False)\n        self.save_position()\n",
          "        self._unsaved_ids.update(published)\n        self._unsaved_position = last_id\n"
          "        self.save_position()\n        self._position = last_id\n        self._published_ids.update(published)\n",
          BRIDGE + "test_redis_lost_between_the_publish_and_the_save_repeats_nothing",
          "the root cause of a result published twice across a Redis restart: the position and the ids "
          "are remembered only once Redis saved them, so a save lost after the broker's ack re-reads the batch"),
    Break("bridge-nagle-on", B, "            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)",
          "            pass", BRIDGE + "test_redis_lost_between_the_publish_and_the_save_repeats_nothing",
          "the bridge's socket keeps Nagle: a result behind another small packet waits for an ACK"),
    Break("bridge-mqtts-wrong-ca-unchecked", B,
          "        if self.endpoint.tls:\n            check_broker_certificate(", "        if False:\n            check_broker_certificate(",
          BRIDGE + "test_mqtts_with_a_private_ca_and_a_login_round_trips_and_a_wrong_ca_is_refused",
          "a broker certificate the CA file does not vouch for leaves the bridge retrying silently"),
    Break("mqtts-ca-file-ignored", CFG,
          "cafile=str(resolve_path(config.mqtt_ca_file)) if config.mqtt_ca_file else None", "cafile=None",
          BRIDGE + "test_mqtts_with_a_private_ca_and_a_login_round_trips_and_a_wrong_ca_is_refused",
          "mqtt_ca_file is not used: a broker with a private CA cannot be reached"),
    Break("detections-counted-before-ignore-zones", "worker/jobqueue/outcomes.py",
          'detected = tuple(detection["class_name"] for detection in message["detections"])',
          "detected = tuple(result.detections.name_of(int(c)) for c in result.detections.class_id)",
          "tests/jobqueue/test_outcomes.py::"
          "test_the_detections_counter_counts_what_the_result_reports_not_what_an_ignore_zone_dropped",
          "deer_worker_detections_total counts a deer an ignore zone dropped"),
    Break("bridge-clean-session", B, "clean_session=False, protocol=mqtt.MQTTv311", "clean_session=True, protocol=mqtt.MQTTv311",
          BRIDGE + "test_a_broker_restart_mid_stream_loses_nothing",
          "what the broker held during a restart is dropped with the session"),
    Break("bridge-stop-leaves-on", B,
          "            cameras = sorted(self._announced | set(self._deer_on))", "            cameras = []",
          BRIDGE + "test_sigterm_turns_every_camera_off_then_says_offline",
          "a clean stop leaves a retained ON behind"),
    Break("bridge-no-last-will", B,
          "        client.will_set(self.availability_topic, AVAILABILITY_OFFLINE, qos=1, retain=True)\n", "",
          BRIDGE + "test_a_killed_bridge_is_marked_offline_by_its_last_will",
          "a dead bridge stays online in Home Assistant"),
]

if __name__ == "__main__":
    run.BREAKS = MQTT_BREAKS
    sys.exit(run.main())
