import cv2
import numpy as np
import pytest

from worker.errors import RoiError
from worker.inference.imagecodec import DecodedImage
from worker.inference.preprocess import Roi, apply_clahe, letterbox_geometry, prepare


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)


def test_clahe_matches_the_users_rgb_lab_formulation():
    bgr = _image(120, 160)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    l_channel, a, b = cv2.split(lab)
    l_channel = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(l_channel)
    expected_rgb = cv2.cvtColor(cv2.merge([l_channel, a, b]), cv2.COLOR_LAB2RGB)
    assert np.array_equal(apply_clahe(bgr), cv2.cvtColor(expected_rgb, cv2.COLOR_RGB2BGR))


def test_clahe_gives_the_same_pixels_when_threads_run_it_at_once():
    # A batch's snapshots are prepared on several threads; OpenCV's CLAHE object keeps scratch
    # buffers, so one shared between threads mixes images' tiles.
    from concurrent.futures import ThreadPoolExecutor

    images = [_image(720, 1280, seed) for seed in range(4)]
    expected = [apply_clahe(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(10):
            assert all(np.array_equal(got, want) for got, want in zip(pool.map(apply_clahe, images), expected))


@pytest.mark.parametrize("h, w", [(1080, 1920), (360, 640), (1080, 810), (100, 3000), (320, 320), (7, 5)])
def test_letterbox_geometry_keeps_aspect_and_centres(h, w):
    new_w, new_h, left, top = letterbox_geometry(h, w, 320, 320)
    assert max(new_w, new_h) == 320
    r = min(320 / h, 320 / w)
    assert abs(new_w - w * r) <= 0.5 and abs(new_h - h * r) <= 0.5
    assert abs(left - (320 - new_w - left)) <= 1 and abs(top - (320 - new_h - top)) <= 1


def test_prepare_pads_with_114_and_maps_boxes_back():
    image = _image(360, 640)
    out = np.zeros((320, 320, 3), np.uint8)
    transform = prepare(DecodedImage(image, 640, 360), out)
    assert (out[:transform.pad_y] == 114).all() and (out[-transform.pad_y:] == 114).all()
    # a box in letterbox pixels covering the whole content maps to the whole image
    content = np.array([[transform.pad_x, transform.pad_y, 320 - transform.pad_x, 320 - transform.pad_y]], np.float32)
    assert np.allclose(transform.to_original(content), [[0, 0, 640, 360]], atol=0.5)


def test_roi_crop_offsets_boxes_into_original_pixels():
    image = _image(1080, 1920)
    out = np.zeros((320, 320, 3), np.uint8)
    roi = Roi(x=960, y=540, width=960, height=540)
    transform = prepare(DecodedImage(image, 1920, 1080), out, roi=roi)
    assert (transform.crop_x0, transform.crop_y0) == (960, 540)
    whole = np.array([[0, transform.pad_y, 320, 320 - transform.pad_y]], np.float32)
    assert np.allclose(transform.to_original(whole), [[960, 540, 1920, 1080]], atol=1)


def test_roi_on_reduced_decode_maps_to_original_pixels():
    small = cv2.resize(_image(1080, 1920), (480, 270))
    out = np.zeros((320, 320, 3), np.uint8)
    transform = prepare(DecodedImage(small, 1920, 1080), out, roi=Roi(0.5, 0.0, 0.5, 1.0, normalized=True))
    whole = np.array([[transform.pad_x, transform.pad_y, 320 - transform.pad_x, 320 - transform.pad_y]], np.float32)
    assert np.allclose(transform.to_original(whole), [[960, 0, 1920, 1080]], atol=4)


@pytest.mark.parametrize("roi", [Roi(-1, 0, 10, 10), Roi(0, 0, 2000, 10), Roi(1900, 1000, 100, 100),
                                 Roi(0.5, 0.5, 0.6, 0.1, normalized=True), Roi(0, 0, 0, 10)])
def test_roi_outside_the_image_is_a_typed_error(roi):
    with pytest.raises(RoiError, match="not inside|less than one pixel"):
        roi.to_pixels(1920, 1080)


@pytest.mark.reference
@pytest.mark.parametrize("h, w", [(1080, 1920), (360, 640), (1080, 810), (333, 1001)])
def test_letterbox_is_pixel_identical_to_ultralytics(h, w):
    from ultralytics.data.augment import LetterBox

    image = _image(h, w, seed=h)
    ours = np.zeros((320, 320, 3), np.uint8)
    prepare(DecodedImage(image, w, h), ours)
    theirs = LetterBox((320, 320), auto=False, stride=32)(image=image)
    assert np.array_equal(ours, theirs)


def test_a_roi_whose_corner_overflows_to_infinity_is_a_roi_error():
    # finite x and width whose sum is inf (found by tests/reliability/test_input_fuzz.py's hypothesis run)
    with pytest.raises(RoiError):
        Roi(1e308, 0.0, 1e308, 1.0).to_pixels(1, 1)
