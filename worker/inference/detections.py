"""The one result shape: parallel numpy arrays, in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detections:
    xyxy: np.ndarray  # (N, 4) float32, x1, y1, x2, y2 in original-image pixels
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = len(self.confidence)
        if self.xyxy.shape != (n, 4) or self.class_id.shape != (n,):
            raise ValueError(f"inconsistent Detections arrays: {self.xyxy.shape}, {n}, {self.class_id.shape}")

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = ()) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), class_names)

    def __len__(self) -> int:
        return len(self.confidence)

    def name_of(self, class_id: int) -> str:
        return self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)

    def any_of(self, class_names: tuple[str, ...]) -> bool:
        """Whether any detection is of one of these classes (by name, as the model spells them)."""
        ids = [i for i, name in enumerate(self.class_names) if name in class_names]
        return bool(np.isin(self.class_id, ids).any())

    def filter(self, mask: np.ndarray) -> Detections:
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask], self.class_names)

    def to_json(self) -> list[dict]:
        return [
            {
                "class_id": int(c),
                "class_name": self.name_of(int(c)),
                "confidence": round(float(s), 4),
                "box": [round(float(v), 1) for v in box],  # x1, y1, x2, y2
            }
            for box, s, c in zip(self.xyxy, self.confidence, self.class_id)
        ]

    @classmethod
    def from_json(cls, items: list[dict], class_names: tuple[str, ...] = ()) -> Detections:
        if not items:
            return cls.empty(class_names)
        return cls(
            np.array([d["box"] for d in items], np.float32).reshape(-1, 4),
            np.array([d["confidence"] for d in items], np.float32),
            np.array([d["class_id"] for d in items], np.int32),
            class_names,
        )
