import shutil

import numpy as np
import pytest
import yaml

from conftest import FP32_MODEL, INT8_MODEL, RAW_MODEL
from worker.errors import ModelLoadError
from worker.inference.runtime import CompileOptions, compile_model, inference_precision, load_spec


def test_loads_ultralytics_ir_directories():
    spec, _ = load_spec(FP32_MODEL)
    assert spec.names == ("deer",) and spec.imgsz == (320, 320) and spec.end2end and spec.weights == "fp32"
    assert load_spec(INT8_MODEL)[0].weights == "int8"
    raw, _ = load_spec(RAW_MODEL)
    assert not raw.end2end and raw.num_classes == 1


def _copy(tmp_path, src=FP32_MODEL):
    dst = tmp_path / "m_openvino_model"
    shutil.copytree(src, dst)
    return dst


def test_missing_weights_names_the_file(tmp_path):
    model = _copy(tmp_path)
    next(model.glob("*.bin")).unlink()
    with pytest.raises(ModelLoadError, match=r"\.bin: weights file missing"):
        load_spec(model)


def test_inconsistent_metadata_names_the_file(tmp_path):
    model = _copy(tmp_path)
    meta = yaml.safe_load((model / "metadata.yaml").read_text())
    meta["imgsz"] = [640, 640]
    (model / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match="metadata.yaml: imgsz"):
        load_spec(model)
    meta["imgsz"], meta["end2end"] = [320, 320], False
    (model / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match="end2end=False"):
        load_spec(model)


def test_bare_xml_needs_names(tmp_path):
    model = _copy(tmp_path)
    (model / "metadata.yaml").unlink()
    with pytest.raises(ModelLoadError, match="no class names"):
        load_spec(next(model.glob("*.xml")))
    spec, _ = load_spec(next(model.glob("*.xml")), names=("deer",))
    assert spec.imgsz == (320, 320) and spec.end2end


def test_no_model_and_two_models(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_spec(tmp_path / "nope")
    model = _copy(tmp_path)
    shutil.copy(next(model.glob("*.xml")), model / "second.xml")
    with pytest.raises(ModelLoadError, match="exactly one .xml"):
        load_spec(model)


def test_precision_is_pinned_to_f32_unless_asked(tmp_path):
    spec, model = load_spec(FP32_MODEL)
    assert inference_precision(compile_model(model, spec, 1, CompileOptions(precision="f32"))) == "f32"
    runner4 = compile_model(model, spec, 4, CompileOptions(precision="f32", cache_dir=str(tmp_path / "cache")))
    out = runner4.infer(np.full((4, 320, 320, 3), 114, np.uint8))
    assert out.shape == (4, 300, 6)
    assert any((tmp_path / "cache").iterdir())  # compiled blob cached for the next start


def test_others_compile_pinned_reaches_code_that_compiles_its_own_models():
    import openvino as ov

    from worker.tools.reference import others_compile_pinned

    original = ov.Core.compile_model
    with others_compile_pinned("f32"):
        # as ultralytics does: its own Core, its own config without a precision
        xml = str(next(FP32_MODEL.glob("*.xml")))
        compiled = ov.Core().compile_model(xml, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        assert compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert ov.Core.compile_model is original


def test_concurrent_runner_runs_parts_side_by_side_in_order_and_a_bad_part_fails_alone():
    from worker.inference.runtime import compile_concurrent

    spec, model = load_spec(FP32_MODEL)
    one_stream = compile_model(model, spec, 2, CompileOptions(precision="f32"))
    concurrent = compile_concurrent(model, spec, 2, CompileOptions(precision="f32"), streams=2)
    assert int(concurrent.compiled.get_property("NUM_STREAMS")) == 2
    assert len(concurrent.requests) == 2 and concurrent.batch == 2 and concurrent.shape == (320, 320)
    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 256, (2, 320, 320, 3), dtype=np.uint8) for _ in range(2)]
    outputs = concurrent.infer_parts(parts)
    for part, output in zip(parts, outputs):  # each part's own output, at its place
        assert np.allclose(output, one_stream.infer(part), atol=1e-3)
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)  # the parts differ, so an order swap would show
    wrong_shape = np.zeros((2, 64, 64, 3), np.uint8)
    failed, fine = concurrent.infer_parts([wrong_shape, parts[1]])
    assert isinstance(failed, RuntimeError) and np.allclose(fine, outputs[1], atol=1e-3)
