"""deer-worker: camera snapshots -> deer detections on CPU with OpenVINO, fed by Redis/RQ.

The data path reads top to bottom through the package:
    imagecodec (bytes -> image) -> preprocess (image -> tensor) -> runtime (tensor -> raw output)
    -> postprocess (raw output -> Detections) -> detector (ties them, knows nothing of Redis)
    -> jobs / results / rqworker (the queue glue).
"""

__version__ = "0.1.0"
