"""Decoded image -> model input: optional CLAHE, optional ROI crop, ultralytics-identical letterbox.

The input shape is the one ultralytics PyTorch `predict` uses (LetterBox(auto=True, stride=32)): the
long side scaled to imgsz, each side padded up to a multiple of 32 (384x640 for 16:9 at 640), with
a floor on the short side (`min_input_side`) so an extreme aspect ratio still has enough anchors.

The tensor stays uint8 HWC BGR: the conversion to float, RGB, /255 and NCHW is compiled into the
model by OpenVINO's PrePostProcessor (see runtime.py), where it costs less than in numpy.
`BoxTransform` records every step so postprocess can map boxes back to original pixels.
"""

from __future__ import annotations

import math
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
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):  # finite parts can still add up to inf
            raise RoiError(f"ROI x={self.x} y={self.y} width={self.width} height={self.height} is not inside "
                           f"the {image_width}x{image_height} image")
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


STRIDE = 32  # YOLO's largest feature stride: every input side is a multiple of it


@dataclass(frozen=True)
class Preprocessing:
    """What the model was trained with, applied before the letterbox (the model card's `preprocessing`)."""

    clahe: bool = False
    clahe_clip: float = CLAHE_CLIP_LIMIT
    clahe_tiles: tuple[int, int] = CLAHE_TILE_GRID


_clahe = threading.local()  # OpenCV's CLAHE keeps scratch buffers in the object: one per thread and setting


def apply_clahe(image: np.ndarray, clip: float = CLAHE_CLIP_LIMIT, tiles: tuple[int, int] = CLAHE_TILE_GRID) -> np.ndarray:
    """The user's training preprocessing: CLAHE on the L channel of LAB only.

    They convert RGB->LAB->RGB; BGR->LAB->BGR gives the same pixels in our channel order.
    """
    ops = getattr(_clahe, "ops", None)
    if ops is None:
        ops = _clahe.ops = {}
    key = (float(clip), tuple(tiles))
    clahe = ops.get(key)
    if clahe is None:
        clahe = ops[key] = cv2.createCLAHE(clipLimit=key[0], tileGridSize=key[1])
    lab = cv2.cvtColor(image, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = clahe.apply(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def min_input_side(imgsz: int) -> int:
    """The shortest input side served: a quarter of imgsz, up to a multiple of 32 (160 at 640, 96 at 320).

    ultralytics' rect letterbox would give a 4000x100 image a 32x640 input; at imgsz 320 that is 210
    anchors, fewer than the end-to-end head's 300 top-k. A quarter of imgsz keeps >= 600 anchors at
    any imgsz >= 320, and only images wider than 4:1 (or taller) get the extra padding.
    """
    return -(-imgsz // 4 // STRIDE) * STRIDE if imgsz >= 4 * STRIDE else STRIDE


def input_shape(height: int, width: int, imgsz: int) -> tuple[int, int]:
    """(H, W) of the model input for an image, as ultralytics LetterBox(auto=True, stride=32) makes it,
    with the short side at least min_input_side(imgsz)."""
    r = min(imgsz / height, imgsz / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    floor = min_input_side(imgsz)
    return (max(new_h + (imgsz - new_h) % STRIDE, floor), max(new_w + (imgsz - new_w) % STRIDE, floor))


def letterbox_geometry(height: int, width: int, target_h: int, target_w: int,
                       imgsz: int | None = None) -> tuple[int, int, int, int]:
    """(new_w, new_h, left, top) exactly as ultralytics LetterBox computes them: scaled so the long side
    fits `imgsz` (default: the target itself, LetterBox(auto=False)), centred in target_h x target_w."""
    limit_h, limit_w = (target_h, target_w) if imgsz is None else (imgsz, imgsz)
    r = min(limit_h / height, limit_w / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    left = round((target_w - new_w) / 2 - 0.1)
    top = round((target_h - new_h) / 2 - 0.1)
    return new_w, new_h, left, top


def letterbox_into(image: np.ndarray, out: np.ndarray, imgsz: int | None = None) -> tuple[int, int, int, int]:
    """Resize `image` keeping aspect into the pre-filled (pad 114) buffer `out`; returns the geometry."""
    target_h, target_w = out.shape[:2]
    height, width = image.shape[:2]
    new_w, new_h, left, top = letterbox_geometry(height, width, target_h, target_w, imgsz)
    if (width, height) != (new_w, new_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out[top : top + new_h, left : left + new_w] = image
    return new_w, new_h, left, top


def _crop(decoded: DecodedImage, roi: Roi | None, preprocessing: Preprocessing
          ) -> tuple[np.ndarray, int, int]:
    """The preprocessed image cut to the ROI, and the ROI origin in decoded pixels."""
    image = decoded.image
    if preprocessing.clahe:
        # Before the crop, so the ROI sees the same pixels the model saw in (full-frame) training.
        image = apply_clahe(image, preprocessing.clahe_clip, preprocessing.clahe_tiles)
    height, width = image.shape[:2]
    if roi is None:
        return image, 0, 0
    ox0, oy0, ox1, oy1 = roi.to_pixels(decoded.original_width, decoded.original_height)
    x0, x1 = (min(width, round(v / decoded.scale_x)) for v in (ox0, ox1))
    y0, y1 = (min(height, round(v / decoded.scale_y)) for v in (oy0, oy1))
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return image[y0:y1, x0:x1], x0, y0


def _letterbox(image: np.ndarray, x0: int, y0: int, decoded: DecodedImage, out: np.ndarray,
               imgsz: int | None) -> BoxTransform:
    out[...] = LETTERBOX_PAD_VALUE
    new_w, new_h, left, top = letterbox_into(image, out, imgsz)
    crop_h, crop_w = image.shape[:2]
    return BoxTransform(
        gain_x=new_w / crop_w, gain_y=new_h / crop_h, pad_x=left, pad_y=top,
        crop_x0=x0, crop_y0=y0, crop_width=crop_w, crop_height=crop_h,
        scale_x=decoded.scale_x, scale_y=decoded.scale_y,
        original_width=decoded.original_width, original_height=decoded.original_height,
    )


def prepare(decoded: DecodedImage, out: np.ndarray, *, roi: Roi | None = None, clahe: bool = False,
            preprocessing: Preprocessing | None = None) -> BoxTransform:
    """Write the square (static-shape) model input for `decoded` into `out` (HxWx3 uint8)."""
    preprocessing = preprocessing or Preprocessing(clahe=clahe)
    image, x0, y0 = _crop(decoded, roi, preprocessing)
    return _letterbox(image, x0, y0, decoded, out, None)


def prepare_rect(decoded: DecodedImage, imgsz: int, *, roi: Roi | None = None,
                 preprocessing: Preprocessing = Preprocessing()) -> tuple[np.ndarray, BoxTransform]:
    """A new input tensor at this image's own (rect) shape, and the box transform."""
    image, x0, y0 = _crop(decoded, roi, preprocessing)
    out = np.empty((*input_shape(*image.shape[:2], imgsz), 3), np.uint8)
    return out, _letterbox(image, x0, y0, decoded, out, imgsz)
