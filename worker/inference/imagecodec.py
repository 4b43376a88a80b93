"""Snapshot bytes -> decoded BGR image.

Formats are sniffed from the header before anything is decoded, so a decompression bomb (a small
file that declares a huge image) is refused without allocating it, and only JPEG and PNG reach the
decoder. A JPEG may be decoded at 1/2, 1/4 or 1/8 size (libjpeg's DCT scaling) when the model input
is smaller than that anyway; the returned `scale` says how decoded pixels map to original pixels.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from worker.constants import DEFAULT_MAX_PIXELS
from worker.errors import (
    CorruptImageError,
    EmptyInputError,
    ImageTooLargeError,
    UnsupportedFormatError,
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_OTHER_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "RIFF/WebP"),
)
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MMAP_THRESHOLD = 32 << 20  # glibc's maximum; above a 4K BGR frame (25 MB)
_TRIM_THRESHOLD = 64 << 20


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" | "png"
    width: int
    height: int


@dataclass(frozen=True)
class DecodedImage:
    image: np.ndarray  # HxWx3 uint8 BGR
    original_width: int
    original_height: int

    @property
    def scale_x(self) -> float:
        """Original pixels per decoded pixel (1.0 unless decoded at reduced size)."""
        return self.original_width / self.image.shape[1]

    @property
    def scale_y(self) -> float:
        return self.original_height / self.image.shape[0]


def reuse_freed_frame_memory() -> bool:
    """Make freed decoded frames stay in the heap for the next snapshot (glibc; False elsewhere).

    By default glibc serves each decoded 1080p frame (6 MB) with a fresh mmap and unmaps it when it is
    freed: measured here, 3-4 ms per snapshot of page faults and munmap, about as much as the decode.
    With the mmap threshold above a 4K frame the blocks stay in the heap and are reused; the process
    keeps a few frames' worth of freed memory (~25 MB after a batch of four 1080p snapshots).
    """
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them; no library search
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl, macOS): keep the platform's default
        return False


def read_header(data: bytes) -> ImageHeader:
    """Identify the format and declared size, or raise a typed InputError."""
    if not data:
        raise EmptyInputError("snapshot is empty (0 bytes)")
    if data.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(data)
        return ImageHeader("jpeg", width, height)
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise CorruptImageError("PNG is truncated before its IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise CorruptImageError(f"PNG declares an empty image ({width}x{height})")
        if b"IEND" not in data[-16:]:
            raise CorruptImageError("PNG is truncated (no IEND chunk at the end)")
        return ImageHeader("png", width, height)
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            raise UnsupportedFormatError(f"{name} snapshots are not accepted; send JPEG or PNG")
    raise UnsupportedFormatError(f"not a JPEG or PNG image (starts with {data[:8]!r})")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos, size, n = 2, None, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise CorruptImageError(f"JPEG marker expected at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise CorruptImageError(f"JPEG segment at byte {pos} has length {length}")
        if marker in _JPEG_SOF:
            if pos + 9 > n:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            size = (width, height)
        if marker == 0xDA:  # start of scan: entropy-coded data follows, so the header is done
            if size is None:
                raise CorruptImageError("JPEG has no frame header before its scan data")
            # Inside scan data 0xFF is byte-stuffed, so an EOI (FFD9) after SOS is the real end. Searched
            # from the end, where it is: a forward search stops at every 0xFF of the scan (0.2 ms a 1080p JPEG).
            if data.rfind(b"\xff\xd9", pos + 2 + length) == -1:
                raise CorruptImageError("JPEG is truncated (no end-of-image marker)")
            if size[0] == 0 or size[1] == 0:
                raise CorruptImageError(f"JPEG declares an empty image ({size[0]}x{size[1]})")
            return size
        pos += 2 + length
    raise CorruptImageError("JPEG is truncated inside its header")


def choose_reduction(header: ImageHeader, crop_width: int, crop_height: int, target: int) -> int:
    """Largest JPEG DCT reduction that still leaves the crop at least as large as the letterbox needs."""
    if header.format != "jpeg":
        return 1
    ratio = min(target / crop_height, target / crop_width)
    for factor in (8, 4, 2):
        if ratio * factor <= 1.0:
            return factor
    return 1


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, reduction: int = 1,
           header: ImageHeader | None = None) -> DecodedImage:
    """Decode JPEG/PNG bytes into BGR uint8; refuse empty, corrupt, unsupported and oversized input."""
    header = header or read_header(data)
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageTooLargeError(
            f"image declares {header.width}x{header.height} = {pixels} pixels, over the limit of {max_pixels}"
        )
    flags = _REDUCED_FLAGS.get(reduction, cv2.IMREAD_COLOR) if header.format == "jpeg" else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None or image.size == 0:
        raise CorruptImageError(f"{header.format.upper()} could not be decoded (corrupt data)")
    height, width = image.shape[:2]
    original_width, original_height = header.width, header.height
    if (width > height) != (original_width > original_height) and width != height:
        original_width, original_height = original_height, original_width  # EXIF rotation was applied
    return DecodedImage(image, original_width, original_height)
