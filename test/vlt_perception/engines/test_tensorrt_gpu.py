"""Real TensorRT: runs only where tensorrt, cuda-python and an NVIDIA GPU exist (never on the CPU CI machines;
test_tensorrt_cache.py and test_factory.py cover the engine interface everywhere)."""

import numpy as np
import pytest

trt = pytest.importorskip("tensorrt")
pytest.importorskip("cuda.bindings.runtime")


@pytest.fixture(autouse=True)
def _need_gpu():
    from vlt_perception.engines.base import EngineUnavailableError
    from vlt_perception.engines.tensorrt_engine import gpu_name

    try:
        gpu_name()
    except EngineUnavailableError as exc:
        pytest.skip(f"no GPU: {exc}")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_cache_and_infer(seg_onnx, images, reference_seg, precision):
    from vlt_perception.engines import create_engine

    path = create_engine(seg_onnx, engine="tensorrt", precision=precision, max_batch=2, build_only=True)
    mtime = path.stat().st_mtime_ns
    engine = create_engine(seg_onnx, engine="tensorrt", precision=precision, max_batch=2)
    assert path.stat().st_mtime_ns == mtime  # loaded from the cache, not rebuilt
    assert engine.info.engine == "tensorrt" and engine.info.device.startswith("cuda")
    out = engine.infer(images)
    labels, confidence = reference_seg(images)
    assert out["labels"].dtype == np.uint8
    agreement = np.mean(out["labels"] == labels)
    assert agreement >= (0.999 if precision == "fp32" else 0.98)
    np.testing.assert_allclose(out["confidence"], confidence, atol=1e-2)
    single = engine.infer(images[:1])  # re-binding for another batch size
    np.testing.assert_array_equal(single["labels"], out["labels"][:1])
    engine.close()
    engine.close()
