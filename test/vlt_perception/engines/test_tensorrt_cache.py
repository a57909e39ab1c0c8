"""Everything around TensorRT that runs without it: cache keys, cache hits, sidecars, calibration batches, and the
checks that keep a cache from running someone else's engine."""

import hashlib
import json
import os

from pathlib import Path

import cv2
import numpy as np
import pytest

from vlt_perception.engines.base import EngineError
from vlt_perception.engines import cache as engine_cache
from vlt_perception.engines.tensorrt_engine import (
    BuildSettings, CalibrationBatches, TensorRTEngine, cache_hit, calibration_files, engine_cache_key,
    ensure_engine, file_sha256, read_sidecar, verified_engine_bytes)
from vlt_perception.preprocess import Preprocessor

SETTINGS = BuildSettings(height=8, width=16, precision="fp16")


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """The per-user cache root of these tests (never the real ~/.cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "vlt_perception"


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


def test_builds_once_then_hits_the_cache(seg_onnx, caplog, user_cache):
    builder = FakeBuilder()
    first = build(seg_onnx, builder)
    assert len(builder.calls) == 1 and first.parent == user_cache / "tensorrt"
    assert (user_cache / "tensorrt").stat().st_mode & 0o777 == 0o700
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


def test_failed_build_leaves_no_entry(seg_onnx, user_cache):
    def broken(onnx_path, settings):
        raise EngineError(f"{onnx_path}: TensorRT engine build failed")

    with pytest.raises(EngineError, match="build failed"):
        build(seg_onnx, broken)
    assert not list((user_cache / "tensorrt").glob("*.engine*"))


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


# --- untrusted cache contents -----------------------------------------------------------------------------------
def _plant(onnx, folder, payload=b"PLANTED ENGINE"):
    """What someone who knows the public inputs can write: the engine file under the right name and a sidecar
    with the right key, size and sha256 (all computable without this user's key)."""
    key = engine_cache_key(file_sha256(onnx), "10.9.0", "NVIDIA H100 80GB HBM3", SETTINGS, {"external_data": {}})
    engine = folder / f"{onnx.stem}.fp16.{key}.engine"
    engine.write_bytes(payload)
    sidecar = {"key": key, "engine_bytes": len(payload), "engine_sha256": hashlib.sha256(payload).hexdigest(),
               "metadata": {}, "signature": "0" * 64}
    (folder / f"{engine.name}.json").write_text(json.dumps(sidecar))
    return engine


@pytest.mark.parametrize("where", ["default cache", "cache_dir beside the ONNX"])
def test_a_planted_engine_with_a_computed_sidecar_is_not_used(seg_onnx, user_cache, where):
    folder = user_cache / "tensorrt" if where == "default cache" else seg_onnx.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    planted = _plant(seg_onnx, folder)
    builder = FakeBuilder()
    path = build(seg_onnx, builder, cache_dir=None if where == "default cache" else folder)
    assert path == planted and len(builder.calls) == 1  # rebuilt over it ...
    assert path.read_bytes().startswith(b"ENGINE:")  # ... so the planted bytes are gone
    assert build(seg_onnx, builder, cache_dir=None if where == "default cache" else folder) == path
    assert len(builder.calls) == 1  # this user's own build is a hit


def test_engine_bytes_are_checked_against_the_sidecar_before_loading(seg_onnx):
    path = build(seg_onnx, FakeBuilder())
    sidecar = read_sidecar(path)
    assert verified_engine_bytes(path, sidecar) == path.read_bytes()
    path.write_bytes(b"X" * path.stat().st_size)  # same size, other bytes
    assert not cache_hit(path, sidecar["key"])
    with pytest.raises(EngineError, match=f"{path}: engine bytes do not match the sha256"):
        verified_engine_bytes(path, sidecar)


def test_tilde_in_cache_dir_is_expanded(seg_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    path = build(seg_onnx, FakeBuilder(), cache_dir="~/.cache/vlt")
    assert path.parent == tmp_path / "home" / ".cache" / "vlt"
    assert not (tmp_path / "~").exists()


def test_cache_folders_others_can_write_are_refused(seg_onnx, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(EngineError, match=f"{shared}: engine cache folder is writable by others"):
        build(seg_onnx, FakeBuilder(), cache_dir=shared)
    shared.chmod(0o775)  # group-writable too
    with pytest.raises(EngineError, match="writable by others"):
        build(seg_onnx, FakeBuilder(), cache_dir=shared)
    assert not list(shared.iterdir())


def test_cache_folders_of_another_user_are_refused(seg_onnx, tmp_path):
    if os.geteuid() == 0:
        other = tmp_path / "other"
        other.mkdir(mode=0o700)
        os.chown(other, 4242, 4242)
    else:
        other = Path("/")  # root's
    with pytest.raises(EngineError, match="belongs to another user"):
        build(seg_onnx, FakeBuilder(), cache_dir=other)


def test_external_data_is_part_of_the_key(seg_onnx, tmp_path):
    import onnx

    model = onnx.load(str(seg_onnx))
    external = tmp_path / "ext" / "tiny_seg.onnx"
    external.parent.mkdir()
    onnx.save(model, str(external), save_as_external_data=True, all_tensors_to_one_file=True,
              location="tiny_seg.weights", size_threshold=0)
    weights = external.parent / "tiny_seg.weights"
    assert weights.exists()
    builder = FakeBuilder()
    first = build(external, builder)
    assert read_sidecar(first)["external_data"] == {"tiny_seg.weights": file_sha256(weights)}
    weights.write_bytes(weights.read_bytes()[::-1])  # other weights, same ONNX bytes
    assert build(external, builder) != first and len(builder.calls) == 2


def test_int8_key_covers_calibration_images_and_keeps_their_cache_private(seg_onnx, tmp_path, user_cache):
    _write_images(tmp_path / "calib", 4)
    settings = BuildSettings(8, 16, "int8", calib_dir=str(tmp_path / "calib"))
    builder = FakeBuilder()
    first = build(seg_onnx, builder, settings=settings)
    used = builder.calls[-1][1]
    assert Path(used.calib_cache).parent == user_cache / "tensorrt"
    assert Path(used.calib_cache).name == first.name.replace(".engine", ".calib.cache")
    assert build(seg_onnx, builder, settings=settings) == first and len(builder.calls) == 1
    _write_images(tmp_path / "calib", 4, size=(14, 20))  # same names, other pixels
    assert build(seg_onnx, builder, settings=settings) != first and len(builder.calls) == 2
