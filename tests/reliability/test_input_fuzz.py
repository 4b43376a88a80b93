"""Property tests of the preprocessing entry: whatever bytes or image arrive, only a typed InputError
(or a result) comes out of Detector.detect, imagecodec.decode and preprocess.prepare. Anything else
(ValueError, cv2.error, OverflowError, ...) would fail a whole batch instead of one job.
"""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import SAMPLES, png_header_only
from worker.errors import InputError
from worker.inference.imagecodec import decode
from worker.inference.preprocess import Roi, prepare

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PREFIXES = [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd8\xff\xc0\x00\x11\x08",
            b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"GIF89a", b"BM", b"II*\x00", b"RIFF"]
SOURCES = [(SAMPLES / "day_640x360_deer.jpg").read_bytes(), (SAMPLES / "night_640x360_empty.jpg").read_bytes(),
           cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))[1].tobytes()]


def _detect(detector, data):
    try:
        return detector.detect(data)
    except InputError:
        return None


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=4096))
@example(prefix=b"", tail=b"")
@example(prefix=b"", tail=png_header_only(20000, 20000))
def test_arbitrary_bytes(fp32_detector, prefix, tail):
    result = _detect(fp32_detector, prefix + tail)
    assert result is None or result.image_width > 0


@FUZZ
@given(source=st.sampled_from(SOURCES), cut=st.integers(0, 10**6),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=16))
def test_truncated_and_corrupted_snapshots(fp32_detector, source, cut, edits):
    data = bytearray(source[:max(1, cut % (len(source) + 1))])
    for position, value in edits:
        data[position % len(data)] = value
    result = _detect(fp32_detector, bytes(data))
    assert result is None or result.image_width > 0


images = st.tuples(st.integers(1, 48), st.integers(1, 48), st.sampled_from([1, 3, 4]),
                   st.sampled_from([np.uint8, np.uint16]), st.sampled_from([".png", ".jpg", ".jpeg"]),
                   st.integers(0, 2**32 - 1))


def _encode(height, width, channels, dtype, ext, seed):
    rng = np.random.default_rng(seed)
    if ext != ".png":
        dtype = np.uint8  # JPEG is 8-bit only
    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    ok, encoded = cv2.imencode(ext, pixels)
    assert ok
    return encoded.tobytes()


@FUZZ
@given(image=images)
def test_any_small_valid_image_is_detected_at_its_size(fp32_detector, image):
    height, width = image[:2]
    result = fp32_detector.detect(_encode(*image))  # valid input: no error at all
    assert (result.image_width, result.image_height) == (width, height)


rois = st.builds(Roi, st.floats(-100, 5000, allow_nan=False), st.floats(-100, 5000, allow_nan=False),
                 st.floats(-10, 5000, allow_nan=False), st.floats(-10, 5000, allow_nan=False), st.just(False)) | \
    st.builds(Roi, st.floats(-1, 2, allow_nan=False), st.floats(-1, 2, allow_nan=False), st.floats(-1, 2, allow_nan=False),
              st.floats(-1, 2, allow_nan=False), st.just(True))


@FUZZ
@given(image=images, roi=st.none() | rois, clahe=st.booleans(), reduction=st.sampled_from([1, 2, 4, 8]))
def test_decode_and_prepare_with_any_roi(image, roi, clahe, reduction):
    out = np.zeros((320, 320, 3), np.uint8)
    try:
        decoded = decode(_encode(*image), reduction=reduction)
        transform = prepare(decoded, out, roi=roi, clahe=clahe)
    except InputError:
        return
    assert 1 <= transform.crop_width <= decoded.image.shape[1] and 1 <= transform.crop_height <= decoded.image.shape[0]


@FUZZ
@given(shape=st.lists(st.integers(0, 64), min_size=0, max_size=4) | st.tuples(st.integers(0, 64), st.integers(0, 64),
                                                                              st.just(3)),
       dtype=st.sampled_from([np.uint8, np.uint8, np.uint16, np.float32, np.int8, np.bool_]))
@example(shape=(0, 5, 3), dtype=np.uint8)
def test_arbitrary_arrays(fp32_detector, shape, dtype):
    result = _detect(fp32_detector, np.zeros(shape, dtype))
    assert result is None or (result.image_width, result.image_height) == (shape[1], shape[0])


roi_numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**6, 10**6)


@FUZZ
@given(x=roi_numbers, y=roi_numbers, width=roi_numbers, height=roi_numbers, normalized=st.booleans(),
       size=st.tuples(st.integers(1, 5000), st.integers(1, 5000)))
@example(x=float("nan"), y=0, width=10, height=10, normalized=False, size=(640, 360))
@example(x=0, y=0, width=float("inf"), height=10, normalized=False, size=(640, 360))
def test_a_roi_the_zones_file_accepts_fails_a_job_only_with_roi_error(x, y, width, height, normalized, size):
    """A ROI passes zones.yaml validation only if, on any image, it is usable or a RoiError: anything else
    (ValueError from NaN, OverflowError from inf) would fail every batch holding that camera's jobs."""
    from worker.cameras import parse_camera_book
    from worker.errors import ConfigError, RoiError

    roi = {"x": x, "y": y, "width": width, "height": height, "normalized": normalized}
    try:
        settings = parse_camera_book({"cameras": {"cam": {"roi": roi}}}).get("cam")
    except ConfigError:
        return
    try:
        x0, y0, x1, y1 = settings.roi.to_pixels(*size)
    except RoiError:
        return
    assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]
