"""Named zones of a camera: which zones each detection is in, which detections an ignore zone drops.

Pure geometry, no I/O. A detection is placed by one point of its box, per camera: its bottom-centre
(`bottom_center`, Frigate's convention and the default: where an animal stands) or its centre
(`center`). A point on a zone's edge is inside it. Zones are polygons (a rectangle is a 4-point
polygon), in original-image pixels or, with `normalized`, in fractions of the width and height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.inference.detections import Detections

ZONE_RULES = ("bottom_center", "center")
DEFAULT_ZONE_RULE = "bottom_center"


@dataclass(frozen=True)
class Zone:
    name: str
    points: tuple[tuple[float, float], ...]  # polygon vertices, in order
    normalized: bool = False
    ignore: bool = False  # an ignore zone drops the detections placed in it

    def polygon(self, width: int, height: int) -> np.ndarray:
        points = np.asarray(self.points, np.float64)
        return points * (width, height) if self.normalized else points


@dataclass(frozen=True)
class ZonePlacement:
    """Detections that survive the ignore zones, and the include zones of each."""

    detections: Detections
    zones_of: list[list[str]]  # per kept detection: the names of the include zones it is in, sorted

    @property
    def zones(self) -> list[str]:
        """Every include zone at least one kept detection is in, sorted."""
        return sorted({name for names in self.zones_of for name in names})


def anchor_points(xyxy: np.ndarray, rule: str) -> np.ndarray:
    """(N, 4) boxes -> (N, 2) points that place them."""
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2.0
    y = xyxy[:, 3] if rule == "bottom_center" else (xyxy[:, 1] + xyxy[:, 3]) / 2.0
    return np.stack([x, y], axis=1).astype(np.float64)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """(N, 2) points, (M, 2) polygon -> (N,) bool; even-odd rule, points on an edge count as inside."""
    px, py = points[:, 0:1], points[:, 1:2]  # (N, 1) against (1, M) edges
    ax, ay = polygon[:, 0][None, :], polygon[:, 1][None, :]
    bx, by = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    scale = np.maximum(np.hypot(bx - ax, by - ay), 1e-12)
    within_x = (np.minimum(ax, bx) - 1e-9 <= px) & (px <= np.maximum(ax, bx) + 1e-9)
    within_y = (np.minimum(ay, by) - 1e-9 <= py) & (py <= np.maximum(ay, by) + 1e-9)
    on_edge = ((np.abs(cross) / scale <= 1e-6) & within_x & within_y).any(axis=1)
    straddles = (ay > py) != (by > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = ax + (py - ay) * (bx - ax) / (by - ay)
    crossings = (straddles & (px < crossing_x)).sum(axis=1)
    return on_edge | (crossings % 2 == 1)


def place(detections: Detections, zones: tuple[Zone, ...], rule: str, width: int, height: int) -> ZonePlacement:
    """Drop detections placed in an ignore zone; name the include zones of the rest."""
    if not zones or len(detections) == 0:
        return ZonePlacement(detections, [[] for _ in range(len(detections))])
    points = anchor_points(detections.xyxy, rule)
    inside = {zone.name: points_in_polygon(points, zone.polygon(width, height)) for zone in zones}
    ignored = np.zeros(len(detections), bool)
    for zone in zones:
        if zone.ignore:
            ignored |= inside[zone.name]
    kept = np.flatnonzero(~ignored)
    include = [zone.name for zone in zones if not zone.ignore]
    zones_of = [sorted(name for name in include if inside[name][i]) for i in kept]
    return ZonePlacement(detections.filter(~ignored), zones_of)
