"""The OpenVINO compiled-model cache goes through the same folder rules as TensorRT engines."""

import pytest

from vlt_perception.engines.base import EngineError

ov = pytest.importorskip("openvino")


def test_openvino_cache_dir_expands_tilde_and_refuses_shared_folders(seg_onnx, tmp_path, monkeypatch):
    from vlt_perception.engines.openvino_engine import OpenVINOEngine

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    OpenVINOEngine(seg_onnx, precision="fp32", cache_dir="~/ov_cache")
    cache = tmp_path / "home" / "ov_cache"
    assert any(p.is_file() for p in cache.rglob("*")) and not (tmp_path / "~").exists()
    assert cache.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(EngineError, match=f"{shared}: engine cache folder is writable by others"):
        OpenVINOEngine(seg_onnx, precision="fp32", cache_dir=shared)
    assert not list(shared.iterdir())
