import ctypes
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import SAMPLES, png_header_only, sample
from worker.errors import CorruptImageError, EmptyInputError, ImageTooLargeError, UnsupportedFormatError
from worker.inference.imagecodec import choose_reduction, decode, read_header


def _jpeg(width=64, height=48, quality=90) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def test_header_reads_jpeg_and_png_sizes():
    header = read_header(sample("day_1920x1080_deer.jpg"))
    assert (header.format, header.width, header.height) == ("jpeg", 1920, 1080)
    png = cv2.imencode(".png", np.zeros((30, 70, 3), np.uint8))[1].tobytes()
    header = read_header(png)
    assert (header.format, header.width, header.height) == ("png", 70, 30)


def test_empty_input():
    with pytest.raises(EmptyInputError, match="empty"):
        read_header(b"")


@pytest.mark.parametrize("cut", [3, 20, 200, -2])
def test_truncated_jpeg_is_corrupt(cut):
    data = _jpeg()
    with pytest.raises(CorruptImageError):
        decode(data[:cut])


def test_garbage_scan_data_decodes_to_a_flat_frame_of_the_declared_size():
    """A JPEG whose header is intact but whose scan data is garbage (stuffed 0xFF bytes, then EOI) is
    not refused: the header checks pass and libjpeg decodes it, with a warning, as a flat grey frame of
    the declared size. Pinned so a change of either half (refusing it, or decoding something else) is
    noticed; the worker then finds nothing in it."""
    data = bytearray(_jpeg(256, 256))
    sos = data.find(b"\xff\xda")
    data[sos + 20:] = b"\xff\x00" * ((len(data) - sos - 22) // 2) + b"\xff\xd9"
    decoded = decode(bytes(data))
    assert decoded.image.shape == (256, 256, 3)
    assert (decoded.original_width, decoded.original_height) == (256, 256)
    assert decoded.image.std() < 2.0 and abs(decoded.image.mean() - 128) < 2.0  # grey, not the random image


@pytest.mark.parametrize("data, name", [(b"GIF89a....", "GIF"), (b"BM\x00\x00", "BMP"), (b"II*\x00rest", "TIFF"),
                                        (b"hello world", "not a JPEG")])
def test_other_formats_are_refused_by_name(data, name):
    with pytest.raises(UnsupportedFormatError, match=name):
        read_header(data)


def test_decompression_bomb_refused_before_decoding():
    bomb = png_header_only(20000, 20000)
    assert read_header(bomb).width == 20000
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        decode(bomb, max_pixels=40_000_000)


def test_png_without_iend_is_truncated():
    png = cv2.imencode(".png", np.zeros((30, 70, 3), np.uint8))[1].tobytes()
    with pytest.raises(CorruptImageError, match="IEND"):
        read_header(png[:-12])


def test_grayscale_and_16bit_png_decode_to_bgr8():
    gray16 = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 30)
    decoded = decode(cv2.imencode(".png", gray16)[1].tobytes())
    assert decoded.image.shape == (40, 50, 3) and decoded.image.dtype == np.uint8


@pytest.mark.parametrize("size, target, expected", [((1920, 1080), 320, 4), ((1920, 1080), 640, 2),
                                                    ((640, 360), 320, 2), ((640, 360), 640, 1),
                                                    ((3840, 2160), 320, 8), ((1920, 1080), 1920, 1)])
def test_reduction_never_goes_below_the_letterbox_size(size, target, expected):
    header = read_header(_jpeg(*size, quality=50))
    factor = choose_reduction(header, size[0], size[1], target)
    assert factor == expected
    ratio = min(target / size[0], target / size[1])
    assert size[0] / factor >= size[0] * ratio - 1e-6


def test_reduced_decode_maps_back_to_original_pixels():
    decoded = decode(sample("day_1920x1080_deer.jpg"), reduction=4)
    assert decoded.image.shape[:2] == (270, 480)
    assert (decoded.original_width, decoded.original_height) == (1920, 1080)
    assert decoded.scale_x == pytest.approx(4.0) and decoded.scale_y == pytest.approx(4.0)


_FRAME_PROBE = """
import ctypes, sys
import cv2, numpy as np
from worker.inference.imagecodec import reuse_freed_frame_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert reuse_freed_frame_memory()
data = np.frombuffer(open(sys.argv[2], "rb").read(), np.uint8)
mapped_before = libc.mallinfo2().hblkhd
frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
print(libc.mallinfo2().hblkhd - mapped_before)
"""


@pytest.mark.parametrize("mode", ["default", "tuned"])
def test_decoded_frames_come_from_the_reusable_heap_once_tuned(mode):
    """A fresh mmap per frame costs page faults and an munmap per snapshot (measured 3-4 ms for 1080p,
    see reuse_freed_frame_memory); tuned, the 6 MB frame is served from the heap instead."""
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    out = subprocess.run([sys.executable, "-c", _FRAME_PROBE, mode, str(SAMPLES / "day_1920x1080_deer.jpg")],
                         capture_output=True, text=True, check=True).stdout
    mapped = int(out.strip().splitlines()[-1])
    if mode == "default":
        assert mapped >= 1920 * 1080 * 3  # the control: glibc maps a frame on its own
    else:
        assert mapped < 1 << 20
