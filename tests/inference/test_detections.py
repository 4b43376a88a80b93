import numpy as np
import pytest

from worker.inference.detections import Detections


def test_json_round_trip():
    det = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.9], np.float32), np.array([0], np.int32),
                     ("deer",))
    back = Detections.from_json(det.to_json(), ("deer",))
    assert np.allclose(back.xyxy, det.xyxy) and back.class_id.tolist() == [0]
    assert det.to_json() == [{"class_id": 0, "class_name": "deer", "confidence": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}]


def test_inconsistent_arrays_are_rejected():
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 4), np.float32), np.zeros(1, np.float32), np.zeros(1, np.int32))


def test_filter_and_unknown_class_name():
    det = Detections(np.zeros((2, 4), np.float32), np.array([0.9, 0.1], np.float32), np.array([0, 7], np.int32),
                     ("deer",))
    assert len(det.filter(det.confidence > 0.5)) == 1
    assert det.name_of(7) == "7"
    assert len(Detections.empty()) == 0
