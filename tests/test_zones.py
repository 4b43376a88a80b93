"""Zones: the geometry (worker/zones.py), their zones.yaml parsing (cameras.py) and the result fields
and zone counter they give (outcomes.ok)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from prometheus_client import generate_latest

from worker.cameras import parse_camera_book
from worker.errors import ConfigError
from worker.inference.detections import Detections
from worker.inference.detector import DetectionResult, StageTimings
from worker.jobqueue import outcomes
from worker.jobqueue.results import ModelInfo
from worker.serve.metrics import MAX_ZONE_LABELS, WorkerMetrics
from worker.zones import Zone, anchor_points, place, points_in_polygon

CONTEXT = outcomes.JobContext(job_id="j1", camera_id="cam1", captured_at=1.0, worker="w0",
                              model=ModelInfo("m", "1", "int8", "f32", ("deer",)), queue_wait=0.0)
SQUARE = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)


def detections(*boxes, names=("deer", "person"), classes=None) -> Detections:
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)
    class_id = np.array(classes if classes is not None else [0] * len(boxes), np.int32)
    return Detections(xyxy, np.full(len(boxes), 0.9, np.float32), class_id, names)


def test_points_inside_outside_and_on_the_edge():
    points = np.array([[5, 5], [0, 5], [10, 10], [10.5, 5], [-0.1, 0], [5, 10]], float)
    assert points_in_polygon(points, SQUARE).tolist() == [True, True, True, False, False, True]


def test_a_concave_polygon_excludes_its_notch():
    # an L: the square minus its top-right quarter
    ell = np.array([[0, 0], [5, 0], [5, 5], [10, 5], [10, 10], [0, 10]], float)
    assert points_in_polygon(np.array([[2, 2], [7, 2], [7, 7]], float), ell).tolist() == [True, False, True]


def test_anchor_rules_bottom_centre_and_centre():
    box = np.array([[100, 100, 200, 300]], np.float32)
    assert anchor_points(box, "bottom_center").tolist() == [[150.0, 300.0]]
    assert anchor_points(box, "center").tolist() == [[150.0, 200.0]]


def test_the_rule_decides_which_zone_a_tall_box_is_in():
    # the box's feet are in the lower half, its centre in the upper half
    lower = Zone("lower", ((0, 0.5), (1, 0.5), (1, 1), (0, 1)), normalized=True)
    found = detections([10, 10, 30, 80])  # centre y 45
    assert place(found, (lower,), "bottom_center", 100, 100).zones_of == [["lower"]]
    assert place(found, (lower,), "center", 100, 100).zones_of == [[]]


def test_normalized_zones_scale_with_the_image():
    zone = Zone("right", ((0.5, 0), (1, 0), (1, 1), (0.5, 1)), normalized=True)
    found = detections([600, 0, 700, 100])  # bottom-centre x = 650
    assert place(found, (zone,), "bottom_center", 1000, 1000).zones == ["right"]
    assert place(found, (zone,), "bottom_center", 2000, 1000).zones == []


def test_ignore_zones_drop_detections_and_include_zones_name_the_rest():
    zones = (Zone("road", ((0, 0), (100, 0), (100, 50), (0, 50)), ignore=True),
             Zone("lawn", ((0, 50), (100, 50), (100, 100), (0, 100))),
             Zone("bed", ((50, 50), (100, 50), (100, 100), (50, 100))))
    found = detections([0, 0, 20, 40], [0, 60, 20, 90], [60, 60, 80, 90])
    placed = place(found, zones, "bottom_center", 100, 100)
    assert len(placed.detections) == 2 and placed.detections.xyxy[:, 1].tolist() == [60, 60]
    assert placed.zones_of == [["lawn"], ["bed", "lawn"]] and placed.zones == ["bed", "lawn"]


def book(camera: dict):
    return parse_camera_book({"cameras": {"cam1": camera}})


def test_zones_yaml_parses_rectangles_and_polygons():
    settings = book({"zone_rule": "center", "require_zone": True, "zones": {
        "lawn": {"rect": {"x": 0, "y": 0.5, "width": 1, "height": 0.5}, "normalized": True},
        "road": {"polygon": [[0, 0], [1920, 0], [1920, 200]], "ignore": True}}}).get("cam1")
    assert settings.zone_rule == "center" and settings.require_zone
    lawn, road = settings.zones
    assert lawn == Zone("lawn", ((0, 0.5), (1, 0.5), (1, 1), (0, 1)), normalized=True)
    assert road.ignore and road.points == ((0, 0), (1920, 0), (1920, 200))


@pytest.mark.parametrize("camera, named", [
    ({"zones": {"z": {"rect": {"x": 0, "y": 0, "width": 0, "height": 1}}}}, "zones.z.rect"),
    ({"zones": {"z": {"polygon": [[0, 0], [1, 1]]}}}, "zones.z.polygon"),
    ({"zones": {"z": {"polygon": [[0, 0], [1, 0], [1, 1]], "rect": {}}}}, "zones.z"),
    ({"zones": {"z": {"polygon": [[0, 0], [2, 0], [1, 1]], "normalized": True}}}, "zones.z"),
    ({"zones": {"z": {"polygon": [[0, 0], [1, 0], [1, float("nan")]]}}}, "zones.z.polygon[2]"),
    ({"zones": {"z": {"rect": {"x": 0, "y": 0, "width": 1, "height": 1}, "shape": "x"}}}, "zones.z.shape"),
    ({"zone_rule": "top"}, "zone_rule"),
    ({"require_zone": True}, "require_zone"),
    ({"require_zone": True, "zones": {"z": {"rect": {"x": 0, "y": 0, "width": 1, "height": 1},
                                             "ignore": True}}}, "require_zone"),
])
def test_a_bad_zone_is_named(camera, named):
    with pytest.raises(ConfigError, match=re.escape(f"cameras.cam1.{named}")):
        book(camera)


def result_of(found: Detections) -> DetectionResult:
    return DetectionResult(found, StageTimings(), 1, 100, 100)


LAWN_AND_ROAD = {"name": "backyard", "zones": {
    "road": {"rect": {"x": 0, "y": 0, "width": 100, "height": 50}, "ignore": True},
    "lawn": {"rect": {"x": 0, "y": 50, "width": 100, "height": 50}}}}


def test_results_carry_zones_per_detection_and_per_result():
    settings = book(LAWN_AND_ROAD).get("cam1")
    message = outcomes.ok(CONTEXT, result_of(detections([0, 0, 20, 40], [0, 60, 20, 90])), settings).message
    assert [d["box"] for d in message["detections"]] == [[0.0, 60.0, 20.0, 90.0]]  # the road's deer dropped
    assert message["detections"][0]["zones"] == ["lawn"] and message["zones"] == ["lawn"]
    assert message["deer_detected"]


def test_a_camera_without_zones_still_has_the_fields():
    message = outcomes.ok(CONTEXT, result_of(detections([0, 0, 20, 40]))).message
    assert message["zones"] == [] and message["detections"][0]["zones"] == [] and message["deer_detected"]


def test_require_zone_reports_only_a_deer_inside_an_include_zone():
    camera = {"require_zone": True, "zones": {"bed": {"rect": {"x": 50, "y": 50, "width": 50, "height": 50}}}}
    settings = book(camera).get("cam1")
    outside = outcomes.ok(CONTEXT, result_of(detections([0, 60, 20, 90])), settings).message
    assert not outside["deer_detected"] and len(outside["detections"]) == 1  # reported, not dropped
    person_inside = outcomes.ok(CONTEXT, result_of(detections([60, 60, 80, 90], classes=[1])), settings).message
    assert not person_inside["deer_detected"]
    inside = outcomes.ok(CONTEXT, result_of(detections([0, 60, 20, 90], [60, 60, 80, 90])), settings).message
    assert inside["deer_detected"] and inside["zones"] == ["bed"]


def scrape(metrics: WorkerMetrics) -> dict[tuple[str, str], float]:
    counts = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "deer_worker_zone_detections_total":
                counts[(sample.labels["camera"], sample.labels["zone"])] = sample.value
    return counts


def test_the_zone_counter_counts_each_detection_in_each_zone_with_bounded_labels():
    settings = book(LAWN_AND_ROAD).get("cam1")
    metrics = WorkerMetrics(camera_labels=["backyard"], class_names=["deer"], queues=["q"])
    outcome = outcomes.ok(CONTEXT, result_of(detections([0, 60, 20, 90], [40, 60, 60, 95], [0, 0, 9, 9])), settings)
    outcome.count(metrics)
    assert scrape(metrics) == {("backyard", "lawn"): 2.0}
    metrics.count_zones("unknown-camera", [f"z{i}" for i in range(MAX_ZONE_LABELS + 5)])
    labels = {zone for _, zone in scrape(metrics)}
    assert len(labels) == MAX_ZONE_LABELS + 1 and "other" in labels  # 64 names, the rest as other
    assert {camera for camera, _ in scrape(metrics)} == {"backyard", "other"}
    assert b"deer_worker_zone_detections_total" in generate_latest(metrics.registry)
