import importlib.util

import numpy as np
import pytest

from vlt_perception.engines import EngineError, EngineUnavailableError, create_engine
from vlt_perception.engines.factory import model_kind
from vlt_perception.engines.onnxruntime_engine import OnnxRuntimeEngine

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def test_auto_picks_onnxruntime_for_onnx_without_tensorrt(seg_onnx, images, reference_seg):
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed: auto prefers it (covered by test_tensorrt_gpu.py)")
    engine = create_engine(seg_onnx, providers=["CPUExecutionProvider"], threads=1)
    assert isinstance(engine, OnnxRuntimeEngine)
    np.testing.assert_array_equal(engine.infer(images)["labels"], reference_seg(images)[0])


def test_explicit_providers_mean_onnxruntime(seg_onnx):
    assert create_engine(seg_onnx, providers=["CPUExecutionProvider"]).info.engine == "onnxruntime"


def test_tensorrt_missing_gives_install_hint(seg_onnx):
    if HAS_TENSORRT:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(EngineUnavailableError, match="TensorRT requested but not installed: pip install tensorrt"):
        create_engine(seg_onnx, engine="tensorrt")
    with pytest.raises(EngineUnavailableError, match="pip install tensorrt"):
        create_engine(seg_onnx, engine="tensorrt", build_only=True)


def test_require_gpu_with_only_cpu(seg_onnx):
    with pytest.raises(EngineUnavailableError, match="GPU was required"):
        create_engine(seg_onnx, engine="onnxruntime", providers=["CPUExecutionProvider"], require_gpu=True)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(EngineError, match=r"unknown model type '\.pt'"):
        create_engine(path)


def test_model_kind(tmp_path, seg_onnx):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "m.engine").write_bytes(b"x")
    assert model_kind(seg_onnx) == "onnx"
    assert model_kind(tmp_path / "ckpt") == "checkpoint"
    assert model_kind(tmp_path / "m.engine") == "tensorrt"


def test_engine_and_file_type_mismatch(tmp_path, seg_onnx):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(EngineError, match="ONNX Runtime needs an .onnx file"):
        create_engine(tmp_path / "ckpt", engine="onnxruntime")
    with pytest.raises(EngineError, match="torch engine loads training checkpoints"):
        create_engine(seg_onnx, engine="torch")
    with pytest.raises(EngineError, match="build_only builds TensorRT engines"):
        create_engine(seg_onnx, engine="onnxruntime", build_only=True)
    with pytest.raises(EngineError, match="unknown engine 'tflite'"):
        create_engine(seg_onnx, engine="tflite")
    with pytest.raises(EngineError, match="OpenVINO runs .onnx files"):
        create_engine(tmp_path / "ckpt", engine="openvino")
    with pytest.raises(EngineError, match="bf16 is not an ONNX export precision"):
        create_engine(seg_onnx, engine="onnxruntime", precision="bf16")


def test_tensorrt_engine_file_without_sidecar(tmp_path):
    engine_file = tmp_path / "model.engine"
    engine_file.write_bytes(b"serialized")
    from vlt_perception.engines.tensorrt_engine import TensorRTEngine

    with pytest.raises(EngineError, match=f"{engine_file}: no metadata sidecar"):
        TensorRTEngine(engine_file)


def test_importing_engines_needs_no_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, vlt_perception.engines, vlt_perception.engines.factory, "
            "vlt_perception.engines.tensorrt_engine, vlt_perception.engines.onnxruntime_engine, "
            "vlt_perception.engines.torch_engine, vlt_perception.engines.openvino_engine, "
            "vlt_perception.preprocess, vlt_perception.pipeline.postprocess; "
            "print(sorted(m for m in ('torch', 'tensorrt', 'onnxruntime', 'openvino', 'vlt_training') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
