"""Inference: snapshot bytes -> image -> tensor -> raw output -> Detections.

Knows nothing of Redis, RQ or HTTP (tests/inference/test_layering.py walks the imports): everything
here runs the same in a worker, a CLI tool or a benchmark.
"""
