"""OpenVINO engine on the tiny contract graph (runs wherever the openvino wheel installs: x86-64 / aarch64)."""

import numpy as np
import pytest

from vlt_perception.engines import create_engine
from vlt_perception.engines.base import EngineError, EngineUnavailableError
from vlt_perception.engines.openvino_engine import OpenVINOEngine, default_precision, import_openvino


def _cpu_has_bf16() -> bool:
    return default_precision(import_openvino().Core(), "CPU") == "bf16"


def test_fp32_matches_numpy_reference(seg_onnx, images, reference_seg):
    engine = OpenVINOEngine(seg_onnx, precision="fp32")
    out = engine.infer(images)
    labels, confidence = reference_seg(images)
    assert out["labels"].dtype == np.uint8 and out["labels"].shape == (2, 8, 16)
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_allclose(out["confidence"], confidence, rtol=1e-5)
    assert (engine.info.engine, engine.info.precision, engine.info.device) == ("openvino", "fp32", "cpu")


def test_outputs_are_not_overwritten_by_the_next_call(seg_onnx, images, reference_seg):
    engine = OpenVINOEngine(seg_onnx, precision="fp32")
    first = engine.infer(images[:1])
    engine.infer(-images[:1])
    np.testing.assert_array_equal(first["labels"], reference_seg(images[:1])[0])


def test_default_precision_follows_the_cpu(seg_onnx, images, reference_seg):
    engine = create_engine(seg_onnx, engine="openvino")
    assert engine.info.precision == ("bf16" if _cpu_has_bf16() else "fp32")
    labels = engine.infer(images)["labels"]
    # bf16 rounds the class scores: only pixels whose two best scores nearly tie may flip
    agreement = float(np.mean(labels == reference_seg(images)[0]))
    assert agreement >= 0.9, agreement


def test_metadata_and_errors(seg_onnx, seg_metadata, tmp_path):
    assert OpenVINOEngine(seg_onnx, precision="fp32").metadata == seg_metadata()
    with pytest.raises(EngineError, match="fp32, bf16 or fp16"):
        OpenVINOEngine(seg_onnx, precision="int8")
    with pytest.raises(EngineUnavailableError, match="device 'NOPE'"):
        OpenVINOEngine(seg_onnx, device="NOPE")
    with pytest.raises(EngineError, match="not found"):
        OpenVINOEngine(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx file")
    with pytest.raises(EngineError, match=str(corrupt)):
        OpenVINOEngine(corrupt)
    with pytest.raises(EngineUnavailableError, match="require_gpu"):
        create_engine(seg_onnx, engine="openvino", require_gpu=True)


def test_bf16_refused_without_bf16_units(seg_onnx, monkeypatch):
    from vlt_perception.engines import openvino_engine

    monkeypatch.setattr(openvino_engine, "default_precision", lambda core, device: "fp32")  # a CPU without bf16
    with pytest.raises(EngineUnavailableError, match="no bf16 units"):
        OpenVINOEngine(seg_onnx, precision="bf16")


def test_compiled_model_cache(seg_onnx, images, tmp_path):
    cache = tmp_path / "ov_cache"
    first = OpenVINOEngine(seg_onnx, precision="fp32", cache_dir=cache).infer(images)
    blobs = sorted(p for p in cache.rglob("*") if p.is_file())
    assert blobs  # the compiled blob, reused by the next start
    # A second start loads the cached blob (nothing new is compiled) and computes the same outputs.
    second = OpenVINOEngine(seg_onnx, precision="fp32", cache_dir=cache).infer(images)
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == blobs
    np.testing.assert_array_equal(second["labels"], first["labels"])
    np.testing.assert_allclose(second["confidence"], first["confidence"], rtol=1e-6)
