"""Helpers for comparing the worker with reference code (ultralytics); used by tests and benchmarks only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import openvino as ov


@contextmanager
def others_compile_pinned(precision: str = "f32") -> Iterator[None]:
    """While inside, every ov.Core.compile_model call of this process runs with INFERENCE_PRECISION_HINT
    set to `precision`. For comparisons with code that compiles its own models (ultralytics), which
    would let this CPU pick bf16, a precision the target machine lacks. Never on the worker's path."""
    original = ov.Core.compile_model

    def compile_pinned(self, model, device_name=None, config=None, **kw):
        return original(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": precision}, **kw)

    ov.Core.compile_model = compile_pinned
    try:
        yield
    finally:
        ov.Core.compile_model = original
