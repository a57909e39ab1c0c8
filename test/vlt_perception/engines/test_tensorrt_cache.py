"""Everything around TensorRT that runs without it: cache keys, cache hits, sidecars, calibration batches."""

import json

import cv2
import numpy as np
import pytest

from vlt_perception.engines.base import EngineError
from vlt_perception.engines.tensorrt_engine import (
    BuildSettings, CalibrationBatches, TensorRTEngine, cache_hit, calibration_files, engine_cache_key,
    ensure_engine, file_sha256, read_sidecar)
from vlt_perception.pipeline.preprocess import Preprocessor

SETTINGS = BuildSettings(height=8, width=16, precision="fp16")


class FakeBuilder:
    """Stands in for the TensorRT builder: returns bytes derived from its inputs and counts calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, onnx_path, settings):
        self.calls.append((onnx_path, settings))
        return b"ENGINE:" + file_sha256(onnx_path).encode() + settings.precision.encode()


def build(onnx, builder, **kw):
    kw.setdefault("trt_version", "10.9.0")
    kw.setdefault("gpu", "NVIDIA H100 80GB HBM3")
    return ensure_engine(onnx, kw.pop("settings", SETTINGS), build_fn=builder, **kw)


def test_key_depends_on_each_component():
    base = engine_cache_key("a" * 64, "10.9.0", "H100", SETTINGS)
    assert base == engine_cache_key("a" * 64, "10.9.0", "H100", SETTINGS)
    variants = [
        engine_cache_key("b" * 64, "10.9.0", "H100", SETTINGS),
        engine_cache_key("a" * 64, "10.10.0", "H100", SETTINGS),
        engine_cache_key("a" * 64, "10.9.0", "Orin", SETTINGS),
        engine_cache_key("a" * 64, "10.9.0", "H100", BuildSettings(8, 16, "fp32")),
        engine_cache_key("a" * 64, "10.9.0", "H100", BuildSettings(16, 16, "fp16")),
        engine_cache_key("a" * 64, "10.9.0", "H100", BuildSettings(8, 16, "fp16", opt_batch=2, max_batch=4)),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    # The workspace limit changes how long a build may search, not what the engine computes.
    assert base == engine_cache_key("a" * 64, "10.9.0", "H100", BuildSettings(8, 16, "fp16", workspace_mib=1))


def test_builds_once_then_hits_the_cache(seg_onnx, caplog):
    builder = FakeBuilder()
    first = build(seg_onnx, builder)
    assert len(builder.calls) == 1 and first.parent == seg_onnx.parent
    assert first.name.startswith("tiny_seg.fp16.") and first.suffix == ".engine"
    with caplog.at_level("INFO"):
        second = build(seg_onnx, builder)
    assert second == first and len(builder.calls) == 1
    assert "cache hit" in caplog.text


def test_sidecar_holds_key_and_metadata(seg_onnx, seg_metadata):
    path = build(seg_onnx, FakeBuilder())
    side = read_sidecar(path)
    assert side["tensorrt_version"] == "10.9.0" and side["gpu"] == "NVIDIA H100 80GB HBM3"
    assert side["onnx_sha256"] == file_sha256(seg_onnx)
    assert side["engine_bytes"] == path.stat().st_size
    assert side["metadata"]["class_names"] == seg_metadata().class_names
    assert side["metadata"]["extra"]["precision"] == "fp16"


def test_changes_trigger_a_rebuild(seg_onnx, write_seg_onnx, seg_metadata):
    builder = FakeBuilder()
    first = build(seg_onnx, builder)
    other_gpu = build(seg_onnx, builder, gpu="Jetson AGX Orin")
    assert other_gpu != first and len(builder.calls) == 2
    assert build(seg_onnx, builder, settings=BuildSettings(8, 16, "fp32")) != first
    assert len(builder.calls) == 3
    # A re-exported (different) ONNX at the same path gets a new engine.
    seg_onnx.write_bytes(seg_onnx.read_bytes() + b"")  # same bytes: still a hit
    build(seg_onnx, builder)
    assert len(builder.calls) == 3
    metadata = seg_metadata()
    metadata.class_names[0] = "renamed"
    write_seg_onnx(seg_onnx, metadata)
    assert build(seg_onnx, builder) != first and len(builder.calls) == 4


def test_incomplete_or_corrupt_cache_entries_are_rebuilt(seg_onnx):
    builder = FakeBuilder()
    path = build(seg_onnx, builder)
    path.write_bytes(b"trunc")  # engine size no longer matches the sidecar
    build(seg_onnx, builder)
    assert len(builder.calls) == 2
    (path.parent / (path.name + ".json")).write_text("{not json")
    assert not cache_hit(path, "whatever")
    build(seg_onnx, builder)
    assert len(builder.calls) == 3


def test_cache_dir(seg_onnx, tmp_path):
    cache = tmp_path / "cache" / "engines"
    path = build(seg_onnx, FakeBuilder(), cache_dir=cache)
    assert path.parent == cache and path.exists()


def test_failed_build_leaves_no_entry(seg_onnx):
    def broken(onnx_path, settings):
        raise EngineError(f"{onnx_path}: TensorRT engine build failed")

    with pytest.raises(EngineError, match="build failed"):
        build(seg_onnx, broken)
    assert not list(seg_onnx.parent.glob("*.engine*"))


def test_missing_onnx_named(tmp_path):
    with pytest.raises(EngineError, match=f"{tmp_path / 'x.onnx'}: ONNX model not found"):
        build(tmp_path / "x.onnx", FakeBuilder())


def test_corrupt_sidecar_named(seg_onnx):
    path = build(seg_onnx, FakeBuilder())
    sidecar = path.parent / (path.name + ".json")
    data = json.loads(sidecar.read_text())
    del data["metadata"]
    sidecar.write_text(json.dumps(data))
    with pytest.raises(EngineError, match=f"{sidecar}: corrupt engine sidecar"):
        TensorRTEngine(path)


def test_build_settings_validation():
    with pytest.raises(EngineError, match="bf16 is for the torch engine"):
        BuildSettings(8, 16, "bf16")
    with pytest.raises(EngineError, match="int8 needs calibration images"):
        BuildSettings(8, 16, "int8")
    with pytest.raises(EngineError, match="min_batch <= opt_batch <= max_batch"):
        BuildSettings(8, 16, "fp16", opt_batch=4, max_batch=2)


def _write_images(folder, n, size=(12, 20)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    images = []
    for i in range(n):
        rgb = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(rgb)
    return images


def test_calibration_batches(tmp_path):
    images = _write_images(tmp_path / "calib", 7)
    (tmp_path / "calib" / "notes.txt").write_text("not an image")
    pre = Preprocessor(8, 16, [0.5] * 3, [0.25] * 3)
    files = calibration_files(tmp_path / "calib", max_images=100)
    assert [f.name for f in files] == [f"{i:03d}.png" for i in range(7)]
    batches = CalibrationBatches(files, pre, batch_size=3)
    got = list(batches)
    assert len(batches) == len(got) == 2  # the 7th image would make a partial batch: dropped
    assert all(b.shape == (3, 3, 8, 16) and b.dtype == np.float32 for b in got)
    np.testing.assert_allclose(got[1][0], pre(images[3])[0])  # files are read as RGB, in order


def test_calibration_subsamples_evenly(tmp_path):
    _write_images(tmp_path / "calib", 10)
    files = calibration_files(tmp_path / "calib", max_images=5)
    assert [f.name for f in files] == ["000.png", "002.png", "004.png", "006.png", "008.png"]


def test_calibration_errors(tmp_path):
    with pytest.raises(EngineError, match="calibration folder not found"):
        calibration_files(tmp_path / "none", 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="no calibration images"):
        calibration_files(tmp_path / "empty", 10)
    _write_images(tmp_path / "two", 2)
    pre = Preprocessor(8, 16, [0.5] * 3, [0.25] * 3)
    with pytest.raises(EngineError, match="fewer than one batch of 4"):
        CalibrationBatches(calibration_files(tmp_path / "two", 10), pre, 4)
    bad = tmp_path / "two" / "000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(EngineError, match=f"{bad}: unreadable image"):
        list(CalibrationBatches(calibration_files(tmp_path / "two", 10), pre, 1))
