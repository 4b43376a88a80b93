"""Decoded image -> model input: optional CLAHE, optional ROI crop, ultralytics-identical letterbox.

The tensor stays uint8 HWC BGR: the conversion to float, RGB, /255 and NCHW is compiled into the
model by OpenVINO's PrePostProcessor (see runtime.py), where it costs less than in numpy.
`BoxTransform` records every step so postprocess can map boxes back to original pixels.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from worker.constants import CLAHE_CLIP_LIMIT, CLAHE_TILE_GRID, LETTERBOX_PAD_VALUE
from worker.errors import RoiError
from worker.inference.imagecodec import DecodedImage


@dataclass(frozen=True)
class Roi:
    """Region of interest in original-image pixels, or as fractions of the image when normalized."""

    x: float
    y: float
    width: float
    height: float
    normalized: bool = False

    def to_pixels(self, image_width: int, image_height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in original pixels; raises RoiError when not inside the image."""
        if self.normalized:
            x0, y0 = self.x * image_width, self.y * image_height
            x1, y1 = (self.x + self.width) * image_width, (self.y + self.height) * image_height
        else:
            x0, y0, x1, y1 = self.x, self.y, self.x + self.width, self.y + self.height
        x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
        if self.width <= 0 or self.height <= 0 or x0 < 0 or y0 < 0 or x1 > image_width or y1 > image_height:
            raise RoiError(
                f"ROI x={self.x} y={self.y} width={self.width} height={self.height}"
                f"{' (normalized)' if self.normalized else ''} is not inside the {image_width}x{image_height} image"
            )
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise RoiError(f"ROI covers less than one pixel of the {image_width}x{image_height} image")
        return x0, y0, x1, y1


@dataclass(frozen=True)
class BoxTransform:
    """How letterboxed model-input pixels map back to original-image pixels."""

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    crop_x0: int  # ROI origin in decoded pixels
    crop_y0: int
    crop_width: int  # ROI size in decoded pixels
    crop_height: int
    scale_x: float  # original pixels per decoded pixel
    scale_y: float
    original_width: int
    original_height: int

    def to_original(self, xyxy: np.ndarray) -> np.ndarray:
        boxes = xyxy.astype(np.float32, copy=True)
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - self.pad_x) / self.gain_x).clip(0, self.crop_width)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - self.pad_y) / self.gain_y).clip(0, self.crop_height)
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] + self.crop_x0) * self.scale_x).clip(0, self.original_width)
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] + self.crop_y0) * self.scale_y).clip(0, self.original_height)
        return boxes


_clahe = threading.local()  # OpenCV's CLAHE keeps scratch buffers in the object: one per thread


def apply_clahe(image: np.ndarray) -> np.ndarray:
    """The user's training preprocessing: CLAHE on the L channel of LAB only.

    They convert RGB->LAB->RGB; BGR->LAB->BGR gives the same pixels in our channel order.
    """
    clahe = getattr(_clahe, "op", None)
    if clahe is None:
        clahe = _clahe.op = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=CLAHE_TILE_GRID)
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def letterbox_geometry(height: int, width: int, target_h: int, target_w: int) -> tuple[int, int, int, int]:
    """(new_w, new_h, left, top) exactly as ultralytics LetterBox(auto=False, center=True) computes them."""
    r = min(target_h / height, target_w / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    left = round((target_w - new_w) / 2 - 0.1)
    top = round((target_h - new_h) / 2 - 0.1)
    return new_w, new_h, left, top


def letterbox_into(image: np.ndarray, out: np.ndarray) -> tuple[int, int, int, int]:
    """Resize `image` keeping aspect into the pre-filled (pad 114) buffer `out`; returns the geometry."""
    target_h, target_w = out.shape[:2]
    height, width = image.shape[:2]
    new_w, new_h, left, top = letterbox_geometry(height, width, target_h, target_w)
    if (width, height) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out[top : top + new_h, left : left + new_w] = image
    return new_w, new_h, left, top


def prepare(decoded: DecodedImage, out: np.ndarray, *, roi: Roi | None = None, clahe: bool = False) -> BoxTransform:
    """Write the model input for `decoded` into `out` (HxWx3 uint8) and return the box transform."""
    image = decoded.image
    if clahe:
        # Before the crop, so the ROI sees the same pixels the model saw in (full-frame) training.
        image = apply_clahe(image)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = 0, 0, width, height
    if roi is not None:
        ox0, oy0, ox1, oy1 = roi.to_pixels(decoded.original_width, decoded.original_height)
        x0, x1 = (min(width, round(v / decoded.scale_x)) for v in (ox0, ox1))
        y0, y1 = (min(height, round(v / decoded.scale_y)) for v in (oy0, oy1))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        image = image[y0:y1, x0:x1]
    out[...] = LETTERBOX_PAD_VALUE
    new_w, new_h, left, top = letterbox_into(image, out)
    crop_h, crop_w = image.shape[:2]
    return BoxTransform(
        gain_x=new_w / crop_w, gain_y=new_h / crop_h, pad_x=left, pad_y=top,
        crop_x0=x0, crop_y0=y0, crop_width=crop_w, crop_height=crop_h,
        scale_x=decoded.scale_x, scale_y=decoded.scale_y,
        original_width=decoded.original_width, original_height=decoded.original_height,
    )
