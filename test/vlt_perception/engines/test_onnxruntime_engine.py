import numpy as np
import pytest

from vlt_perception.engines import create_engine
from vlt_perception.engines.base import EngineError, EngineUnavailableError
from vlt_perception.engines.onnxruntime_engine import (
    DEFAULT_PROVIDERS, OnnxRuntimeEngine, provider_options, resolve_providers)


def test_infer_matches_numpy_reference(seg_onnx, images, reference_seg):
    engine = OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"])
    out = engine.infer(images)
    labels, confidence = reference_seg(images)
    assert out["labels"].dtype == np.uint8 and out["labels"].shape == (2, 8, 16)
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_allclose(out["confidence"], confidence, rtol=1e-5)


def test_metadata_comes_from_the_file(seg_onnx, seg_metadata):
    engine = OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"])
    assert engine.metadata == seg_metadata()


def test_info_reports_what_really_runs(seg_onnx):
    engine = OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"], intra_op_threads=1, inter_op_threads=1)
    assert engine.info.engine == "onnxruntime"
    assert engine.info.providers == list(engine.session.get_providers())
    assert engine.info.providers[-1] == "CPUExecutionProvider"
    assert engine.info.device == ("cpu" if engine.info.providers == ["CPUExecutionProvider"] else "cuda:0")
    assert engine.info.model_path == str(seg_onnx)


def test_require_gpu_raises_when_only_cpu_runs(seg_onnx):
    with pytest.raises(EngineUnavailableError, match="GPU was required.*CPUExecutionProvider"):
        OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"], require_gpu=True)


def test_default_providers_fall_back_to_what_runs(seg_onnx, images):
    engine = OnnxRuntimeEngine(seg_onnx)  # TensorRT, CUDA, CPU: whatever this build and machine have
    assert engine.info.providers and engine.infer(images)["labels"].shape == (2, 8, 16)


def test_resolve_providers():
    assert resolve_providers(None, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers(None, list(DEFAULT_PROVIDERS)) == list(DEFAULT_PROVIDERS)
    assert resolve_providers(["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(EngineError, match="unknown ONNX Runtime providers"):
        resolve_providers(["cuda"], ["CPUExecutionProvider"])


@pytest.mark.parametrize("open_model, missing, corrupt", [
    (lambda path: OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"]), "ONNX model not found",
     "ONNX Runtime cannot load"),
    (lambda path: create_engine(path, engine="onnxruntime"), "model not found", "ONNX Runtime cannot load"),
    (create_engine, "model not found", "ONNX Runtime cannot load"),
], ids=["OnnxRuntimeEngine", "create_engine-onnxruntime", "create_engine-auto"])
def test_missing_and_corrupt_files_name_the_path(tmp_path, open_model, missing, corrupt):
    path = tmp_path / "nope.onnx"
    with pytest.raises(EngineError, match=f"{path}: {missing}"):
        open_model(path)
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(EngineError, match=f"{path}: {corrupt}"):
        open_model(path)


def test_model_without_metadata_is_rejected(tmp_path, write_seg_onnx, seg_metadata):
    path = write_seg_onnx(tmp_path / "bare.onnx", metadata=None)
    with pytest.raises(EngineError, match="no 'vlt_metadata' metadata"):
        OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"])
    # ... unless the caller supplies it
    engine = OnnxRuntimeEngine(path, providers=["CPUExecutionProvider"], metadata=seg_metadata())
    assert engine.metadata.class_names == ["r", "g", "b", "dark"]


@pytest.mark.parametrize("bad", [np.zeros((1, 3, 8, 15), np.float32), np.zeros((1, 3, 8, 16), np.float64),
                                 np.zeros((3, 8, 16), np.float32)])
def test_bad_input_is_explained(seg_onnx, bad):
    engine = OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"])
    with pytest.raises(EngineError, match="input must be"):
        engine.infer(bad)


class CountingSession:
    """Forwards to the real ONNX Runtime session and records the batches it runs."""

    def __init__(self, session) -> None:
        self._session = session
        self.batches: list[tuple[int, ...]] = []

    def run(self, output_names, feeds):
        self.batches.append(tuple(next(iter(feeds.values())).shape))
        return self._session.run(output_names, feeds)


@pytest.mark.parametrize("iterations", [1, 3])
def test_warmup_runs_the_model_at_its_input_size(seg_onnx, iterations):
    engine = OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"])
    session = engine.session = CountingSession(engine.session)
    engine.warmup(iterations)
    size = (engine.metadata.input_height, engine.metadata.input_width)
    assert session.batches == [(1, 3, *size)] * iterations


def test_tensorrt_provider_caches_its_engines(tmp_path):
    model = tmp_path / "m.onnx"
    opts = provider_options(list(DEFAULT_PROVIDERS), model, None, fp16=True)
    assert opts[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    name, trt = opts[0]
    assert name == "TensorrtExecutionProvider" and trt["trt_engine_cache_enable"] and trt["trt_fp16_enable"]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "m.ort_trt_cache")
    _, trt = provider_options(["TensorrtExecutionProvider"], model, tmp_path / "c", fp16=False)[0]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "c") and not trt["trt_fp16_enable"]


@pytest.mark.parametrize("spin_wait, expected", [(False, "0"), (True, "1")])
def test_spin_wait_reaches_the_session(seg_onnx, images, reference_seg, spin_wait, expected):
    engine = OnnxRuntimeEngine(seg_onnx, providers=["CPUExecutionProvider"], spin_wait=spin_wait)
    options = engine.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
    np.testing.assert_array_equal(engine.infer(images)["labels"], reference_seg(images)[0])
